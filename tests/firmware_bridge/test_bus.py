"""LockBus over a real pty with a scripted cu16 board (and loop:// for a silent line):
status, unlock outcomes, unlock-all, scan, board health, configuration errors."""

from __future__ import annotations

import pytest

from firmware_bridge import (
    BoardConfig,
    BoardStatus,
    ChannelStatus,
    LockBus,
    UnlockOutcome,
)
from firmware_bridge.errors import BoardTimeout, ConfigError, LinkError
from tests.firmware_bridge.fake_board import Cu16Board

FAST = {"pulse_ms": 50}


def test_status_reports_every_channel(cu16):
    board, _, bus = cu16
    board.locked[2] = False
    board.occupied[15] = True
    status = bus.status(1)
    assert isinstance(status, BoardStatus)
    assert status.board == 1 and status.protocol == "kerong-cu16"
    assert len(status.channels) == 16
    assert status.channels[2] == ChannelStatus(3, locked=False, occupied=False)
    assert status.channels[15] == ChannelStatus(16, locked=True, occupied=True)
    assert status.to_dict()["channels"][0] == {"channel": 1, "locked": True, "occupied": False}


def test_polarity_and_sensors_follow_board_config(make_peer, make_bus):
    board = Cu16Board(1)
    board.locked[0] = False  # input level 0 on channel 1
    peer = make_peer("kerong-cu16", board)
    config = BoardConfig("kerong-cu16", 1, channels=4, locked_level=0, has_sensors=False)
    bus = make_bus(peer.url, "kerong-cu16", boards=[config])
    status = bus.status(1)
    assert [c.locked for c in status.channels] == [True, False, False, False]
    assert all(c.occupied is None for c in status.channels)


def test_unlock_opened(make_peer, make_bus):
    board = Cu16Board(1)
    peer = make_peer("kerong-cu16", board)
    bus = make_bus(peer.url, "kerong-cu16", boards=[BoardConfig("kerong-cu16", 1, **FAST)])
    result = bus.unlock(1, 3)
    assert result.outcome is UnlockOutcome.OPENED
    assert result.status == ChannelStatus(3, locked=False, occupied=False)
    assert board.unlocked == [3]
    # Nobody had read the board yet: one status query first (was the door open already?),
    # then the unlock, then the status after the pulse.
    kinds = [type(r).__name__ for _, r in peer.requests]
    assert kinds == ["Cu16Status", "Cu16Unlock", "Cu16Status"]
    assert peer.requests[1][1].lock == 2
    assert result.frame_sent_at <= peer.requests[1][0]


def test_unlock_after_a_fresh_poll_sends_the_unlock_first(make_peer, make_bus):
    """The controller polls several times a second: its unlocks must not wait for a read."""
    board = Cu16Board(1)
    peer = make_peer("kerong-cu16", board)
    bus = make_bus(peer.url, "kerong-cu16", boards=[BoardConfig("kerong-cu16", 1, **FAST)])
    bus.status(1)
    polled = len(peer.requests)
    assert bus.unlock(1, 4).outcome is UnlockOutcome.OPENED
    kinds = [type(r).__name__ for _, r in peer.requests[polled:]]
    assert kinds == ["Cu16Unlock", "Cu16Status"]


def test_unlock_of_a_door_already_open_with_no_earlier_poll(make_peer, make_bus):
    board = Cu16Board(1)
    board.locked[5] = False  # forced open before anyone asked
    peer = make_peer("kerong-cu16", board)
    bus = make_bus(peer.url, "kerong-cu16", boards=[BoardConfig("kerong-cu16", 1, **FAST)])
    assert bus.unlock(1, 6).outcome is UnlockOutcome.ALREADY_OPEN
    assert board.unlocked == [6]  # it is still pulsed: the latch may need it to re-arm


def test_unlock_already_open_from_a_fresh_status(make_peer, make_bus):
    board = Cu16Board(1)
    board.locked[4] = False
    peer = make_peer("kerong-cu16", board)
    bus = make_bus(peer.url, "kerong-cu16", boards=[BoardConfig("kerong-cu16", 1, **FAST)])
    bus.status(1)
    result = bus.unlock(1, 5)
    assert result.outcome is UnlockOutcome.ALREADY_OPEN
    assert board.unlocked == [5]


def test_unlock_jammed(make_peer, make_bus):
    board = Cu16Board(1)
    board.jammed.add(7)
    peer = make_peer("kerong-cu16", board)
    bus = make_bus(peer.url, "kerong-cu16", boards=[BoardConfig("kerong-cu16", 1, **FAST)])
    result = bus.unlock(1, 7)
    assert result.outcome is UnlockOutcome.JAMMED
    assert result.status.locked is True


def test_unlock_no_response_is_an_outcome_not_an_exception(make_peer, make_bus):
    board = Cu16Board(1)
    board.silent = True
    peer = make_peer("kerong-cu16", board)
    bus = make_bus(
        peer.url,
        "kerong-cu16",
        retries=0,
        drain_quiet=0.01,
        boards=[BoardConfig("kerong-cu16", 1, **FAST)],
    )
    result = bus.unlock(1, 2)
    assert result.outcome is UnlockOutcome.NO_RESPONSE
    assert result.status is None
    # The unlock is sent once only (a second pulse could be a double open); the silent look
    # before it does not stop it.
    kinds = [type(r).__name__ for _, r in peer.requests]
    assert kinds == ["Cu16Status", "Cu16Unlock", "Cu16Status"]


def test_unlock_on_a_board_that_does_not_answer_unlocks(make_peer, make_bus):
    board = Cu16Board(1)
    board.answers_unlock = False
    peer = make_peer("kerong-cu16", board)
    config = BoardConfig("kerong-cu16", 1, answers_unlock=False, **FAST)
    bus = make_bus(peer.url, "kerong-cu16", boards=[config])
    assert bus.unlock(1, 1).outcome is UnlockOutcome.OPENED
    assert bus.health(1).consecutive_timeouts == 0


def test_unlock_all(make_peer, make_bus):
    board = Cu16Board(1)
    board.jammed.add(16)
    peer = make_peer("kerong-cu16", board)
    bus = make_bus(peer.url, "kerong-cu16", boards=[BoardConfig("kerong-cu16", 1, **FAST)])
    results = bus.unlock_all(1)
    assert [r.channel for r in results] == list(range(1, 17))
    assert [r.outcome for r in results] == [UnlockOutcome.OPENED] * 15 + [UnlockOutcome.JAMMED]


@pytest.mark.parametrize("protocol", ["kerong-cu48b", "modbus-relay"])
def test_unlock_all_where_the_protocol_lacks_it(make_bus, protocol):
    bus = make_bus("loop://", protocol)
    with pytest.raises(ConfigError, match="no unlock-all"):
        bus.unlock_all(1)


def test_health_goes_unreachable_and_recovers(make_peer, make_bus):
    board = Cu16Board(1)
    board.silent = True
    peer = make_peer("kerong-cu16", board)
    bus = make_bus(peer.url, "kerong-cu16", retries=0, drain_quiet=0.01, unreachable_after=3)
    for expected in (1, 2, 3):
        with pytest.raises(BoardTimeout):
            bus.status(1)
        assert bus.health(1).consecutive_timeouts == expected
    health = bus.health(1)
    assert not health.reachable and health.last_seen is None
    board.silent = False
    bus.status(1)
    health = bus.health(1)
    assert health.reachable and health.consecutive_timeouts == 0
    assert health.last_seen is not None
    assert [h.address for h in bus.healths()] == [1]


def test_scan_finds_the_boards_that_answer(make_peer, make_bus):
    boards = {1: Cu16Board(1), 4: Cu16Board(4)}
    peer = make_peer("kerong-cu16", lambda r: boards[r.board](r) if r.board in boards else [])
    bus = make_bus(peer.url, "kerong-cu16", timeout=0.05, drain_quiet=0.01)
    assert bus.scan(range(0, 6)) == [1, 4]
    assert len(peer.requests) == 6  # one try per address


def test_silent_board_on_loop_is_a_timeout_not_garbage(make_bus):
    # loop:// hands our own frame back: an echo is not an answer, nor garbage.
    bus = make_bus("loop://", "kerong-cu16", retries=1, drain_quiet=0.01)
    with pytest.raises(BoardTimeout, match="board 3 did not answer"):
        bus.status(3)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda bus: bus.status(16), "address must be 0..15"),
        (lambda bus: bus.unlock(1, 17), "channels 1..16, not 17"),
        (lambda bus: bus.unlock(1, 0), "channels 1..16, not 0"),
        (lambda bus: bus.unlock("1", 1), "address must be"),
    ],
)
def test_bad_board_or_channel_is_a_config_error(make_bus, call, message):
    bus = make_bus("loop://", "kerong-cu16")
    with pytest.raises(ConfigError, match=message):
        call(bus)


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown lock-board protocol 'kerong'"):
        LockBus.open("loop://", "kerong")
    with pytest.raises(ConfigError, match="channels must be 1..16"):
        BoardConfig("kerong-cu16", 1, channels=17)
    with pytest.raises(ConfigError, match="carry no occupancy sensors"):
        BoardConfig("bcc-8a", 1, has_sensors=True)
    with pytest.raises(ConfigError, match="configured as kerong-cu48"):
        LockBus.open("loop://", "kerong-cu16", boards=[BoardConfig("kerong-cu48", 1)])


def test_missing_port_is_a_link_error_naming_it():
    with pytest.raises(LinkError, match="/dev/ttyDOESNOTEXIST"):
        LockBus.open("/dev/ttyDOESNOTEXIST", "kerong-cu16")
    with pytest.raises(LinkError, match="nosuch://x"):
        LockBus.open("nosuch://x", "kerong-cu16")


class Bcc8aBoard:
    """A 24-input 8A board at address 1: last data byte holds channels 1-8 (DESIGN.md §4)."""

    def __init__(self) -> None:
        self.levels = [1] * 24

    def __call__(self, request):
        from firmware_bridge.protocols import bcc8a
        from firmware_bridge.protocols.base import pack_bits

        if request.board != 1:
            return []
        if isinstance(request, bcc8a.Unlock):
            self.levels[request.channel - 1] = 0
            return [(0, bcc8a.UnlockReply(1, request.channel, 0).pack())]
        data = pack_bits(self.levels, 3)[::-1]
        return [(0, bcc8a.BoardStateReply(1, data).pack())]


class RelayBoard:
    """A Modbus relay board at address 1 with 8 door inputs (1 = shut)."""

    def __init__(self) -> None:
        self.levels = [1] * 8
        self.flashes = []

    def __call__(self, request):
        from firmware_bridge.protocols import modbus_relay
        from firmware_bridge.protocols.base import pack_bits

        if isinstance(request, modbus_relay.WriteCoil):
            self.flashes.append((request.coil, request.value))
            self.levels[request.coil - 0x0200] = 0
            return [(0, request.pack())]
        data = pack_bits(self.levels[request.start : request.start + request.count], 1)
        return [(0, modbus_relay.Inputs(1, data).pack())]


def test_bcc8a_status_length_follows_the_board_and_unlock(make_peer, make_bus):
    board = Bcc8aBoard()
    peer = make_peer("bcc-8a", board)
    bus = make_bus(peer.url, "bcc-8a", boards=[BoardConfig("bcc-8a", 1, **FAST)])
    status = bus.status(1)
    assert len(status.channels) == 24  # nobody said 24: the frame did
    assert bus.unlock(1, 3).outcome is UnlockOutcome.OPENED
    assert [c.channel for c in bus.status(1).channels if not c.locked] == [3]


def test_bcc8a_board_narrower_than_configured_is_a_protocol_error(make_peer, make_bus):
    from firmware_bridge.errors import ProtocolError

    peer = make_peer("bcc-8a", Bcc8aBoard())
    bus = make_bus(peer.url, "bcc-8a", boards=[BoardConfig("bcc-8a", 1, channels=32)])
    with pytest.raises(ProtocolError, match="reports 24 inputs but is configured with 32"):
        bus.status(1)


def test_modbus_relay_unlock_sends_the_pulse_length(make_peer, make_bus):
    board = RelayBoard()
    peer = make_peer("modbus-relay", board)
    config = BoardConfig("modbus-relay", 1, pulse_ms=200)
    bus = make_bus(peer.url, "modbus-relay", boards=[config])
    assert bus.unlock(1, 3).outcome is UnlockOutcome.OPENED
    assert board.flashes == [(0x0202, 2)]  # coil 0x0200 + ch0, 2 x 100 ms
    assert len(bus.status(1).channels) == 8


def test_unlock_goes_before_the_retries_of_a_poll(make_peer, make_bus):
    # Board 2 is dead and polled with retries; a keypad unlock on board 1 arriving meanwhile
    # takes the line at the end of the current attempt instead of after every retry.
    import threading
    import time

    from firmware_bridge.protocols.kerong import Cu16Status, Cu16Unlock

    board = Cu16Board(1)
    peer = make_peer("kerong-cu16", board)
    config = BoardConfig("kerong-cu16", 1, **FAST)
    bus = make_bus(
        peer.url, "kerong-cu16", timeout=0.3, retries=2, drain_quiet=0.01, boards=[config]
    )
    poll_failed = []

    def poll():
        try:
            bus.status(2)
        except BoardTimeout:
            poll_failed.append(True)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        while not peer.requests:  # the first poll attempt is on the wire
            time.sleep(0.005)
        result = bus.unlock(1, 2)
    finally:
        poller.join(10)
    assert result.outcome is UnlockOutcome.OPENED and poll_failed == [True]
    sequence = [(type(r), r.board) for _, r in peer.requests]
    # The look before the unlock (board 1 had not been read) is urgent too.
    assert sequence[:3] == [(Cu16Status, 2), (Cu16Status, 1), (Cu16Unlock, 1)]
    assert sequence.count((Cu16Status, 2)) == 3
