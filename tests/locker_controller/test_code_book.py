"""The keypad's code book against the shared scheme: the same answers as match_counter."""

from __future__ import annotations

from locker_controller.code_book import CodeBook
from locker_controller.store import Handover
from xinbao.codes import code_for, derive_locker_key, match_counter

KEY = derive_locker_key(b"m" * 32, "XA-BOOK")


def live(counter: int, digits: int = 8) -> Handover:
    return Handover(counter, "pickup", 1, None, counter, digits, None, "deposited", None)


def test_finds_the_handover_of_a_code_as_match_counter_does():
    handovers = [live(c) for c in range(100, 220)] + [live(500, digits=6)]
    book = CodeBook(KEY)
    book.warm(handovers)
    for counter in (100, 157, 219):
        code = code_for(KEY, counter)
        assert book.match(code, handovers).counter == counter
        assert match_counter(KEY, code, range(100, 220)) == counter
    six = code_for(KEY, 500, 6)
    assert book.match(six, handovers).handover_id == 500
    assert book.match(code_for(KEY, 99), handovers) is None  # a counter not held here
    # Lengths must agree: six digits are never compared with the eight-digit codes.
    assert book.match(code_for(KEY, 157)[:6], handovers[:-1]) is None


def test_a_handover_gone_from_the_live_set_no_longer_matches():
    handovers = [live(c) for c in range(10)]
    book = CodeBook(KEY)
    book.warm(handovers)
    code = code_for(KEY, 3)
    assert book.match(code, handovers).counter == 3
    remaining = [h for h in handovers if h.counter != 3]  # revoked, or collected
    book.warm(remaining)
    assert book.match(code, remaining) is None
    # Not warmed yet (synced a moment ago): digested on first use, same answer.
    fresh = [*remaining, live(42)]
    assert book.match(code_for(KEY, 42), fresh).counter == 42
