"""The simulated boards behave as the vendors document them (tracker issue 12), literal bytes
over a real socket and a real pty. Sources, as in tests/firmware_bridge/test_vendor_vectors:

- KERONG: Kerong's "CU48 Protocol And Introduction" v2.1 (2020-03-23), a copy in the public
  repository Boudha25/CasierIntelligent, Datasheet/: frames, the 0A broadcast, LOCK 30, the
  worked examples, and that an unlock (51) has no reply.
- ISSUE: the tracker issue's facts from field drivers and captures: the 8A reply whose data
  hold 33, the 90 batch unlock, the 9A/9B keep-power and 82 report heads (the rest of those
  frames is the codec's assumption, see firmware_bridge/protocols/bcc8a.py), cu16 CMD 37.
"""

from __future__ import annotations

import pytest

from simulator import BoardSpec
from tests.simulator.conftest import transact
from tests.support.waiting import wait_until

H = bytes.fromhex


def set_locked(sim, board: int, locked: set[int]) -> None:
    """Every door of ``board`` open except ``locked`` (forced, with no command)."""
    for channel in range(1, sim.board(board).spec.channels + 1):
        if channel not in locked:
            sim.open_door(board, channel, by="forced")


# -- kerong-cu48 ------------------------------------------------------------------------------


def test_cu48_vendor_status_example(make_sim, connect):
    # KERONG: 02 00 00 50 03 55 -> 02 00 00 65 07 00 00 00 00 C0 03 31 (locks 1, 2, 3, 47
    # and 48 locked). The example's LOCK byte is 00; the board is pinned to it here.
    sim = make_sim(BoardSpec("kerong-cu48", 0, reply_lock_byte=0))
    set_locked(sim, 0, {1, 2, 3, 47, 48})
    port = connect(sim)
    assert transact(port, H("02 00 00 50 03 55"), 12) == H("02 00 00 65 07 00 00 00 00 C0 03 31")


def test_cu48_reply_lock_byte_is_junk(make_sim, connect):
    # KERONG: the reply's LOCK byte carries no meaning; the simulated board varies it, so a
    # master that insists on 00 fails against it.
    sim = make_sim(BoardSpec("kerong-cu48", 1))
    port = connect(sim)
    seen = set()
    for _ in range(6):
        reply = transact(port, H("02 01 00 50 03 56"), 12)
        assert reply[:2] == H("02 01") and reply[3:] == H("65 FF FF FF FF FF FF 03") + reply[-1:]
        assert reply[-1] == sum(reply[:-1]) & 0xFF
        seen.add(reply[2])
    assert len(seen) > 1 and seen != {0}


def test_cu48_unlock_and_unlock_all_have_no_reply(make_sim, connect):
    # KERONG: 02 00 00 51 03 56 unlocks lock 1 and 02 00 30 51 03 86 every lock of board 0,
    # neither with a reply.
    sim = make_sim(BoardSpec("kerong-cu48", 0))
    port = connect(sim, timeout=0.1)
    assert transact(port, H("02 00 00 51 03 56"), 12) == b""
    wait_until(lambda: sim.compartment(0, 1).door_open, 5, "lock 1 to open")
    assert not sim.compartment(0, 2).door_open
    assert transact(port, H("02 00 30 51 03 86"), 12) == b""
    wait_until(lambda: len(sim.truth.events("lock_pulse")) == 49, 5, "every lock to pulse")
    pulses = sim.truth.events("lock_pulse")
    assert [p.channel for p in pulses] == [1, *range(1, 49)]
    assert sim.truth.events("reply_sent") == []


def test_cu48_board_that_answers_unlocks_when_told_to(make_sim, connect):
    # Firmware outside the document may answer: answers_unlock=True models it.
    sim = make_sim(BoardSpec("kerong-cu48", 0, answers_unlock=True, reply_lock_byte=0))
    port = connect(sim)
    assert transact(port, H("02 00 00 51 03 56"), 12) == H("02 00 00 65 FE FF FF FF FF FF 03 63")


def test_cu48_broadcast_query_is_answered_by_every_board_in_turn(make_sim, connect):
    # KERONG: 02 0A 00 50 03 5F is heard by every board and each answers in turn; board 1
    # with only lock 24 locked answered 02 01 00 65 00 00 80 00 00 00 03 EB.
    sim = make_sim(
        BoardSpec("kerong-cu48", 3, reply_lock_byte=0),
        BoardSpec("kerong-cu48", 0, reply_lock_byte=0),
        BoardSpec("kerong-cu48", 1, reply_lock_byte=0),
    )
    set_locked(sim, 1, {24})
    port = connect(sim)
    replies = transact(port, H("02 0A 00 50 03 5F"), 36)
    assert [replies[i : i + 12] for i in (0, 12, 24)] == [
        H("02 00 00 65 FF FF FF FF FF FF 03 64"),
        H("02 01 00 65 00 00 80 00 00 00 03 EB"),
        H("02 03 00 65 FF FF FF FF FF FF 03 67"),
    ]
    assert [e.board for e in sim.truth.events("reply_sent")] == [0, 1, 3]


def test_cu48_broadcast_unlock_all_opens_every_board(make_sim, connect):
    # KERONG: 02 0A 30 51 03 90 unlocks every lock on the bus; nobody answers.
    sim = make_sim(BoardSpec("kerong-cu48", 0, channels=4), BoardSpec("kerong-cu48", 9, channels=4))
    sim.inject(9, "absent")  # an unpowered board opens nothing
    port = connect(sim, timeout=0.1)
    assert transact(port, H("02 0A 30 51 03 90"), 12) == b""
    # Requests are taken in order: once board 0 answers a query, the broadcast is done.
    port.timeout = 2
    assert transact(port, H("02 00 00 50 03 55"), 12)[:2] == H("02 00")
    assert [(p.board, p.channel) for p in sim.truth.events("lock_pulse")] == [
        (0, ch) for ch in range(1, 5)
    ]


def test_cu48_addresses_are_0_to_9():
    from simulator import SpecError

    with pytest.raises(SpecError, match="outside 0..9"):
        BoardSpec("kerong-cu48", 10)


# -- bcc-8a -------------------------------------------------------------------------------------


def test_bcc8a_reply_data_can_hold_33(make_sim, connect):
    # ISSUE: 80 01 00 33 B2 33 33 is one whole 24-channel reply: S3=00, S2=33, S1=B2.
    sim = make_sim(BoardSpec("bcc-8a", 1, channels=24))
    set_locked(sim, 1, {2, 5, 6, 8, 9, 10, 13, 14})
    port = connect(sim)
    assert transact(port, H("80 01 00 33 B2"), 7) == H("80 01 00 33 B2 33 33")


def test_bcc8a_wide_board_puts_channels_1_to_8_first(make_sim, connect):
    # ISSUE: a 50-channel board answers with 7 data bytes, channels 1-8 in the first.
    sim = make_sim(BoardSpec("bcc-8a", 2, channels=50))
    set_locked(sim, 2, {1, 50})
    port = connect(sim)
    assert transact(port, H("80 02 00 33 B1"), 11) == H("80 02 01 00 00 00 00 00 02 33 B2")


def test_bcc8a_batch_unlock_is_silent(make_sim, connect):
    # ISSUE: 90 01 02 02 02 93 opens channels 2, 10 and 18; no reply is documented.
    sim = make_sim(BoardSpec("bcc-8a", 1))
    port = connect(sim, timeout=0.1)
    assert transact(port, H("90 01 02 02 02 93"), 5) == b""
    wait_until(lambda: len(sim.truth.events("lock_pulse")) == 3, 5, "three pulses")
    assert [p.channel for p in sim.truth.events("lock_pulse")] == [2, 10, 18]
    assert [c for c in range(1, 25) if sim.compartment(1, c).door_open] == [2, 10, 18]


def test_bcc8a_keep_power_on_and_off(make_sim, connect):
    # ISSUE: 9A holds a lock's power on, 9B cuts it (frame layout assumed, see the codec).
    sim = make_sim(BoardSpec("bcc-8a", 1, spring_open=False))
    port = connect(sim, timeout=0.1)
    assert transact(port, H("9A 01 03 11 89"), 5) == b""
    wait_until(lambda: sim.compartment(1, 3).pulsing, 5, "power held on")
    assert not sim.compartment(1, 3).locked
    assert transact(port, H("9B 01 03 11 88"), 5) == b""
    wait_until(lambda: not sim.compartment(1, 3).pulsing, 5, "power cut")


def test_bcc8a_pushes_door_reports_when_enabled(make_sim, connect):
    # ISSUE: firmware that pushes door changes sends 82-headed reports unasked.
    sim = make_sim(BoardSpec("bcc-8a", 1, reports_doors=True), BoardSpec("bcc-8a", 2))
    port = connect(sim)
    sim.open_door(1, 5, by="forced")
    assert port.read(5) == H("82 01 05 00 86")  # door 5 low: open
    sim.close_door(1, 5)
    assert port.read(5) == H("82 01 05 11 97")  # latched shut again
    sim.open_door(2, 5, by="forced")  # board 2 does not push
    port.timeout = 0.1
    assert port.read(5) == b""
    assert [e.board for e in sim.truth.events("report_sent")] == [1, 1]


def test_bcc8a_report_follows_an_unlock_reply(make_sim, connect):
    sim = make_sim(BoardSpec("bcc-8a", 1, reports_doors=True))
    port = connect(sim)
    assert transact(port, H("8A 01 03 11 99"), 10) == H("8A 01 03 00 88 82 01 03 00 80")


# -- kerong-cu16 ------------------------------------------------------------------------------


def test_cu16_pulse_time_is_stored_for_the_board(make_sim, connect):
    # ISSUE: 02 ADDR 37 HI LO 03 SUM sets the pulse in 10 ms units; no reply. 0x0032 = 500 ms
    # would be the default; 0x0019 = 250 ms is stored and used by the next unlock.
    sim = make_sim(BoardSpec("kerong-cu16", 1, answers_unlock=False))
    port = connect(sim, timeout=0.1)
    assert transact(port, H("02 10 37 00 19 03 65"), 9) == b""
    stored = sim.truth.wait_for("pulse_time_set", timeout=5)
    assert stored is not None and stored.data["pulse_ms"] == 250
    port.write(H("02 12 31 03 48"))
    wait_until(lambda: sim.truth.events("lock_pulse"), 5, "the lock pulse")
    assert sim.truth.events("lock_pulse")[0].data["duration_s"] == 0.25
