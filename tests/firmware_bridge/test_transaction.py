"""BusTransaction over a real pty with a scripted board: retries, timeouts, draining late
replies, garbage, bad checksums and the Modbus inter-frame gap."""

from __future__ import annotations

import pytest

from firmware_bridge.errors import BoardRefusal, BoardTimeout, ProtocolError
from firmware_bridge.protocols import get_protocol
from firmware_bridge.protocols.base import pack_bits
from firmware_bridge.protocols.bcc8a import BoardStateReply
from firmware_bridge.protocols.kerong import Cu16Status, Cu16StatusReply
from firmware_bridge.protocols.modbus_relay import Inputs, ReadInputs, Refusal
from firmware_bridge.transaction import SILENCE_FRAMED_QUIET_S, BusTransaction
from firmware_bridge.transport import SerialTransport
from tests.firmware_bridge.fake_board import Cu16Board


@pytest.fixture
def open_transport():
    opened = []

    def open_(url: str, baud: int = 19200) -> SerialTransport:
        transport = SerialTransport.open(url, baud)
        opened.append(transport)
        return transport

    yield open_
    for transport in opened:
        transport.close()


def transaction(transport, protocol="kerong-cu16", **options):
    options.setdefault("timeout", 0.15)
    options.setdefault("retries", 2)
    return BusTransaction(transport, get_protocol(protocol), **options)


def test_reply_is_matched(make_peer, open_transport):
    board = Cu16Board(1)
    board.locked[2] = False
    peer = make_peer("kerong-cu16", board)
    exchange = transaction(open_transport(peer.url)).execute(Cu16Status(1))
    assert isinstance(exchange.frame, Cu16StatusReply)
    assert exchange.frame.locks == pack_bits([1, 1, 0] + [1] * 13, 2)
    assert len(peer.requests) == 1


def test_silence_is_retried_then_board_timeout(make_peer, open_transport):
    board = Cu16Board(1)
    board.silent = True
    peer = make_peer("kerong-cu16", board)
    with pytest.raises(BoardTimeout, match="board 1 did not answer") as caught:
        transaction(open_transport(peer.url), retries=2, drain_quiet=0.01).execute(Cu16Status(1))
    assert caught.value.board == 1 and caught.value.sent_at is not None
    assert [r for _, r in peer.requests] == [Cu16Status(1)] * 3


def test_retry_succeeds_after_one_silent_attempt(make_peer, open_transport):
    answered = []

    def flaky(request):
        answered.append(request)
        if len(answered) == 1:
            return []
        return [(0, Cu16StatusReply(address=0x10).pack())]

    peer = make_peer("kerong-cu16", flaky)
    exchange = transaction(open_transport(peer.url), drain_quiet=0.01).execute(Cu16Status(1))
    assert exchange.frame == Cu16StatusReply(address=0x10)
    assert len(peer.requests) == 2


def test_late_reply_is_drained_not_taken_for_the_next_answer(make_peer, open_transport):
    board = Cu16Board(1)
    peer = make_peer("kerong-cu16", board)
    # The first reply (every lock shut) comes 50 ms after the 150 ms timeout...
    board.late_once = 0.2
    bus = transaction(open_transport(peer.url), retries=0, drain_quiet=0.4)
    with pytest.raises(BoardTimeout):
        bus.execute(Cu16Status(1))
    # ...and by the next request every lock is open: the answer must say so.
    board.locked = [False] * 16
    exchange = bus.execute(Cu16Status(1))
    assert exchange.frame.locks == b"\x00\x00"
    assert len(peer.requests) == 2 and len(peer.writes) == 2


def test_garbage_before_reply(make_peer, open_transport):
    board = Cu16Board(1)
    board.garbage = bytes.fromhex("FA FD 99 99")  # DESIGN.md §4: USB adapter noise
    peer = make_peer("kerong-cu16", board)
    exchange = transaction(open_transport(peer.url)).execute(Cu16Status(1))
    assert exchange.frame.board == 1
    assert len(peer.requests) == 1


def test_bad_checksum_is_a_protocol_error_after_retries(make_peer, open_transport):
    board = Cu16Board(1)
    board.corrupt = True
    peer = make_peer("kerong-cu16", board)
    with pytest.raises(ProtocolError, match="bad checksum") as caught:
        transaction(open_transport(peer.url), drain_quiet=0.01).execute(Cu16Status(1))
    assert caught.value.board == 1
    assert not isinstance(caught.value, BoardTimeout)
    assert len(peer.requests) == 3


def test_reply_from_another_board_is_not_taken(make_peer, open_transport):
    # A board set to the wrong DIP address answers in place of the one we asked.
    peer = make_peer("kerong-cu16", lambda r: [(0, Cu16StatusReply(address=0x20).pack())])
    with pytest.raises(ProtocolError, match="unexpected frame"):
        transaction(open_transport(peer.url), retries=0, drain_quiet=0.01).execute(Cu16Status(1))


def test_modbus_refusal_is_not_retried(make_peer, open_transport):
    peer = make_peer("modbus-relay", lambda r: [(0, Refusal(r.board, 0x82, 0x02).pack())])
    bus = transaction(open_transport(peer.url, 9600), "modbus-relay")
    with pytest.raises(BoardRefusal, match="illegal data address"):
        bus.execute(ReadInputs(1, 0, 8))
    assert len(peer.requests) == 1


def test_modbus_gap_is_respected(make_peer, open_transport):
    # At 1200 baud 3.5 characters of 11 bits last 32 ms. The peer notes when it started
    # writing each reply and when each request arrived: the master may only send again
    # after the line has been quiet that long.
    peer = make_peer("modbus-relay", lambda r: [(0, Inputs(r.board, b"\xff").pack())])
    bus = transaction(open_transport(peer.url, 1200), "modbus-relay")
    assert bus.gap == pytest.approx(3.5 * 11 / 1200)
    for _ in range(4):
        bus.execute(ReadInputs(1, 0, 8))
    arrivals = [t for t, _ in peer.requests]
    replies = [t for t, _ in peer.writes]
    quiet = [arrivals[i + 1] - replies[i] for i in range(3)]
    assert min(quiet) >= bus.gap


def test_two_threads_never_interleave_frames(make_peer, open_transport):
    import threading

    boards = {1: Cu16Board(1), 2: Cu16Board(2)}
    peer = make_peer("kerong-cu16", lambda r: boards[r.board](r) if r.board in boards else [])
    bus = transaction(open_transport(peer.url))
    errors = []

    def poll(address):
        try:
            for _ in range(10):
                assert bus.execute(Cu16Status(address)).frame.board == address
        except AssertionError as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=poll, args=(a,)) for a in boards]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    assert len(peer.requests) == 20
    assert peer.noise == b""  # every byte the board heard was part of a whole request


@pytest.mark.parametrize(("answer_at", "timeout"), [(0.002, 0.06), (0.1, 0.12)])
def test_an_8a_reply_framed_on_silence_that_began_in_time_is_taken(
    make_peer, open_transport, answer_at, timeout
):
    """While a board's width is unknown its status reply ends on the line going quiet
    (SILENCE_FRAMED_QUIET_S). A reply that starts before the deadline is the board's answer
    even when that silence ends after it: a scan with a short timeout once called such a
    board garbled ("incomplete frame") when the machine was slow to read."""
    reply = BoardStateReply(board=1, data=bytes([0xFF, 0xFF, 0xFF]))
    peer = make_peer("bcc-8a", lambda request: [(answer_at, reply.pack())])
    # The timeout is shorter than the reply's time plus its silence, in both cases.
    assert answer_at + SILENCE_FRAMED_QUIET_S > timeout
    bus = transaction(open_transport(peer.url, 9600), "bcc-8a", timeout=timeout, retries=0)
    exchange = bus.execute(get_protocol("bcc-8a").query_all(1, 64))
    assert exchange.frame == reply
    assert len(peer.requests) == 1


def test_an_8a_reply_that_begins_after_the_deadline_is_not_waited_for(make_peer, open_transport):
    peer = make_peer(
        "bcc-8a", lambda request: [(0.2, BoardStateReply(board=1, data=bytes(3)).pack())]
    )
    bus = transaction(open_transport(peer.url, 9600), "bcc-8a", timeout=0.1, retries=0)
    with pytest.raises(BoardTimeout):
        bus.execute(get_protocol("bcc-8a").query_all(1, 64))
