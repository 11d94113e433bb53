"""LockBus against the real simulator, through real pyserial over a pty and over TCP.

Every protocol: scan finds exactly the simulated boards, status follows the simulated doors,
items and polarity, and each unlock outcome is checked against the simulator's ground truth
(one lock pulse per unlock, never two). Faults live in test_sim_faults.py, the CLI in
test_sim_cli.py; both reuse the rig built here.

Wire timing is off here (replies are immediate), so timeouts can be short; the tests whose
subject is timing turn it on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from serial.urlhandler import protocol_socket

from firmware_bridge import (
    BoardConfig,
    BoardStatus,
    BoardTimeout,
    ChannelStatus,
    ConfigError,
    LinkError,
    LockBus,
    UnlockOutcome,
    get_protocol,
)
from simulator import BoardSpec, Cabinet, Simulator, TruthEvent
from tests.support.waiting import wait_until

PULSE_MS = 50  # the shortest pulse BoardConfig takes: unlock tests wait it out
TIMEOUT = 0.4  # replies are immediate without wire timing; this bounds silence, with room for
# a loaded machine (at 0.15 s a late reply under a 4-worker suite was taken for silence)

# protocol -> (simulated addresses, addresses a scan tries, an address nobody answers)
PROTOCOLS: dict[str, tuple[list[int], range, int]] = {
    "kerong-cu16": ([1, 3], range(0, 6), 5),
    "kerong-cu48": ([1, 3], range(0, 6), 5),
    "kerong-cu48b": ([0, 3], range(0, 6), 5),
    "bcc-8a": ([1, 3], range(0, 6), 5),
    "modbus-relay": ([1, 3], range(1, 6), 5),
}
LINKS = ("pty", "tcp")
# The simulator's name for an unlock request, per protocol.
UNLOCK_COMMANDS = {"unlock", "write_coil"}


def config_for(spec: BoardSpec, **overrides: object) -> BoardConfig:
    """The master-side configuration a technician would write for ``spec``."""
    settings: dict[str, object] = {
        "channels": spec.channels,
        "locked_level": spec.locked_level,
        "answers_unlock": spec.answers_unlock,
        "pulse_ms": spec.pulse_ms,
        "status_byte_order": spec.status_byte_order,
    }
    settings.update(overrides)
    return BoardConfig(spec.protocol, spec.address, **settings)


@dataclass
class Rig:
    """One simulator served on one link, and the LockBuses opened on it."""

    sim: Simulator
    url: str
    buses: list[LockBus] = field(default_factory=list)

    def bus(self, boards: list[BoardConfig] | None = None, **options: object) -> LockBus:
        """A bus configured for every simulated board (or ``boards``)."""
        options.setdefault("timeout", TIMEOUT)
        options.setdefault("retries", 1)
        if boards is None:
            boards = [config_for(b.spec) for b in self.sim.boards]
        bus = LockBus.open(self.url, self.sim.protocol, boards=boards, **options)
        self.buses.append(bus)
        return bus

    def close(self) -> None:
        for bus in self.buses:
            bus.close()
        self.sim.stop()

    # -- ground truth ----------------------------------------------------------------------

    def mark(self) -> int:
        return self.sim.truth.last_seq

    def events(self, kind: str, since: int, **where: int) -> list[TruthEvent]:
        return self.sim.truth.events(kind, since, **where)

    def unlock_frames(self, since: int, board: int) -> list[TruthEvent]:
        return [
            e
            for e in self.events("frame_received", since, board=board)
            if e.data["command"] in UNLOCK_COMMANDS
        ]

    def assert_one_pulse(self, since: int, board: int, channel: int) -> TruthEvent:
        """Exactly one unlock frame reached the board and exactly one coil pulse fired."""
        assert len(self.unlock_frames(since, board)) == 1
        pulses = self.events("lock_pulse", since, board=board)
        assert [(p.channel, p.board) for p in pulses] == [(channel, board)]
        return pulses[0]


MakeRig = Callable[..., Rig]


@pytest.fixture(params=LINKS)
def link(request) -> str:
    return request.param


@pytest.fixture
def no_close_pause(monkeypatch) -> None:
    """pyserial sleeps 0.3 s after closing a socket:// port, "for quick reconnects"; the
    simulator lets a new connection take the line over at once, so the pause only slows
    the suite. Only pyserial's socket module sees the stub."""
    monkeypatch.setattr(protocol_socket, "time", SimpleNamespace(sleep=lambda _s: None))


@pytest.fixture
def make_rig(link: str, no_close_pause: None) -> Iterator[MakeRig]:
    rigs: list[Rig] = []

    def make(*specs: BoardSpec, **options: object) -> Rig:
        options.setdefault("wire_timing", False)
        options.setdefault("reply_delay", 0.0)
        sim = Simulator(list(specs), **options)
        try:
            url = sim.start_pty() if link == "pty" else sim.start_tcp("127.0.0.1", 0)
        except BaseException:
            sim.stop()
            raise
        rig = Rig(sim, url)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


def specs_for(protocol: str, **options: object) -> list[BoardSpec]:
    options.setdefault("pulse_ms", PULSE_MS)
    return [BoardSpec(protocol, address, **options) for address in PROTOCOLS[protocol][0]]


def assert_matches_sim(status: BoardStatus, sim: Simulator, *, sensors: bool) -> None:
    """Every channel the bus reports equals the simulator's ground truth for it."""
    truth = sim.board(status.board).states()
    assert len(status.channels) == len(truth)
    for seen, real in zip(status.channels, truth, strict=True):
        assert seen.channel == real.channel
        assert seen.locked == real.locked, f"channel {real.channel}"
        assert seen.occupied == (real.occupied if sensors else None), f"channel {real.channel}"


def senses_items(protocol: str) -> bool:
    return protocol in ("kerong-cu16", "kerong-cu48b")


# -- scan ---------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_scan_finds_exactly_the_simulated_boards(make_rig, protocol):
    simulated, tried, _ = PROTOCOLS[protocol]
    rig = make_rig(*specs_for(protocol))
    # Scans wait out the silence of every empty address, so a short timeout keeps them quick.
    bus = rig.bus(boards=[], timeout=0.08, drain_quiet=0.02)
    since = rig.mark()
    assert bus.scan(tried) == simulated
    # One status query per address tried, none retried.
    queried = [e.board for e in rig.events("frame_received", since)]
    assert queried == list(tried)
    assert rig.events("lock_pulse", since) == []


@pytest.mark.parametrize("link", ["pty"])
def test_scan_default_range_of_cu16(make_rig):
    """With no --addresses a cu16 scan covers board numbers 0..14: one driver sends ADDR
    nibble F to every board (tracker issue 12), so 15 is tried only when asked for."""
    rig = make_rig(BoardSpec("kerong-cu16", 0), BoardSpec("kerong-cu16", 15))
    bus = rig.bus(boards=[], timeout=0.06, drain_quiet=0.02)
    since = rig.mark()
    assert bus.scan() == [0]
    assert [e.board for e in rig.events("frame_received", since)] == list(range(15))
    assert bus.scan([15]) == [15]


# -- status -------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_status_follows_doors_and_items(make_rig, protocol):
    sensors = senses_items(protocol)
    rig = make_rig(*specs_for(protocol))
    bus = rig.bus()
    sim = rig.sim
    for address in PROTOCOLS[protocol][0]:
        assert_matches_sim(bus.status(address), sim, sensors=sensors)
    board = PROTOCOLS[protocol][0][1]

    # A door opened by the bus, an item put in, the door shut again.
    assert bus.unlock(board, 2).outcome is UnlockOutcome.OPENED
    sim.put_item(board, 2)
    status = bus.status(board)
    assert status.channel(2).locked is False
    assert status.channel(2).occupied is (True if sensors else None)
    assert_matches_sim(status, sim, sensors=sensors)
    sim.close_door(board, 2)
    status = bus.status(board)
    assert status.channel(2).locked is True
    assert status.channel(2).occupied is (True if sensors else None)
    assert_matches_sim(status, sim, sensors=sensors)

    # Another door forced open, the first one opened again and its item taken out.
    sim.inject(board, "forced_open", channel=8)
    assert bus.unlock(board, 2).outcome is UnlockOutcome.OPENED
    sim.take_item(board, 2)
    status = bus.status(board)
    assert [c.channel for c in status.channels if not c.locked] == [2, 8]
    assert_matches_sim(status, sim, sensors=sensors)
    # The other board never moved.
    other = PROTOCOLS[protocol][0][0]
    assert all(c.locked for c in bus.status(other).channels)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_inverted_polarity(make_rig, protocol):
    """Boards wired so that 0 means locked: configured the same way, the bus reads true;
    configured the common way, every door reads the opposite (the commissioning symptom)."""
    rig = make_rig(*specs_for(protocol, locked_level=0))
    board = PROTOCOLS[protocol][0][0]
    bus = rig.bus()
    rig.sim.inject(board, "forced_open", channel=4)
    status = bus.status(board)
    assert [c.channel for c in status.channels if not c.locked] == [4]
    assert_matches_sim(status, rig.sim, sensors=senses_items(protocol))

    bus.close()  # one master on the line at a time
    wrong = rig.bus(boards=[config_for(rig.sim.board(board).spec, locked_level=1)])
    assert [c.channel for c in wrong.status(board).channels if c.locked] == [4]


# -- unlock outcomes against the ground truth ---------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unlock_opened_already_open_and_jammed(make_rig, protocol):
    rig = make_rig(*specs_for(protocol))
    sim = rig.sim
    board = PROTOCOLS[protocol][0][1]
    bus = rig.bus(retries=2)  # retries must never turn into a second pulse

    since = rig.mark()
    result = bus.unlock(board, 3)
    assert result.outcome is UnlockOutcome.OPENED
    assert result.status is not None and result.status.locked is False
    pulse = rig.assert_one_pulse(since, board, 3)
    assert pulse.data["jammed"] is False
    opened = rig.events("door_opened", since, board=board)
    assert [(e.channel, e.by) for e in opened] == [(3, "command")]
    # The frame left the master before the simulator saw it complete.
    assert result.frame_sent_at <= rig.unlock_frames(since, board)[0].mono
    assert sim.compartment(board, 3).door_open

    # The door still stands open and the bus has just read it: asking again says so, and
    # the second request is one more pulse, not two.
    bus.status(board)
    since = rig.mark()
    assert bus.unlock(board, 3).outcome is UnlockOutcome.ALREADY_OPEN
    rig.assert_one_pulse(since, board, 3)
    assert rig.events("door_opened", since) == []

    sim.inject(board, "jammed", channel=6)
    since = rig.mark()
    result = bus.unlock(board, 6)
    assert result.outcome is UnlockOutcome.JAMMED
    assert result.status is not None and result.status.locked is True
    assert rig.assert_one_pulse(since, board, 6).data["jammed"] is True
    assert rig.events("door_opened", since) == []
    assert sim.compartment(board, 6).locked


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unlock_of_an_absent_board_is_no_response(make_rig, protocol):
    _, _, nobody = PROTOCOLS[protocol]
    rig = make_rig(*specs_for(protocol))
    configs = [config_for(b.spec) for b in rig.sim.boards]
    configs.append(BoardConfig(protocol, nobody, pulse_ms=PULSE_MS))
    bus = rig.bus(boards=configs, retries=0, timeout=0.1, drain_quiet=0.05)
    since = rig.mark()
    result = bus.unlock(nobody, 1)
    assert result.outcome is UnlockOutcome.NO_RESPONSE
    assert result.status is None
    # The frame went out once (no retry of an unlock); nothing pulsed anywhere.
    assert len(rig.unlock_frames(since, nobody)) == 1
    assert rig.events("lock_pulse", since) == []


def test_silent_cu16_unlock(make_rig):
    """Some cu16 boards answer an unlock with nothing: the bus must not wait for a reply,
    retry the unlock, or call it no_response."""
    rig = make_rig(BoardSpec("kerong-cu16", 2, pulse_ms=PULSE_MS, answers_unlock=False))
    bus = rig.bus(retries=2)
    since = rig.mark()
    assert bus.unlock(2, 16).outcome is UnlockOutcome.OPENED
    rig.assert_one_pulse(since, 2, 16)
    assert bus.health(2).consecutive_timeouts == 0


def test_bcc8a_first_byte_order(make_rig):
    """Big 8A boards that put channels 1-8 in the first status byte, configured to match."""
    rig = make_rig(
        BoardSpec("bcc-8a", 1, channels=20, status_byte_order="first", pulse_ms=PULSE_MS)
    )
    bus = rig.bus()
    assert bus.unlock(1, 2).outcome is UnlockOutcome.OPENED
    assert bus.unlock(1, 17).outcome is UnlockOutcome.OPENED
    status = bus.status(1)
    assert [c.channel for c in status.channels if not c.locked] == [2, 17]
    assert_matches_sim(status, rig.sim, sensors=False)


# protocol -> what the simulator calls the status query and the unlock-all request
UNLOCK_ALL_FRAMES = {
    "kerong-cu16": ("status", "unlock_all"),  # CMD 33
    "kerong-cu48": ("status", "unlock_all"),  # LOCK 30 (Kerong's CU48 document; no reply)
    "bcc-8a": ("query_all", "unlock_all"),  # 8A BOARD 00 11 (no reply is documented)
}


@pytest.mark.parametrize("protocol", UNLOCK_ALL_FRAMES)
def test_unlock_all_pulses_every_lock_once(make_rig, protocol):
    """The families with an unlock-all request: one frame, a pulse on every lock, and each
    channel's outcome read from the board afterwards."""
    rig = make_rig(BoardSpec(protocol, 2, channels=16, pulse_ms=PULSE_MS))
    rig.sim.inject(2, "jammed", channel=7)
    rig.sim.inject(2, "forced_open", channel=9)
    bus = rig.bus()
    since = rig.mark()
    results = bus.unlock_all(2)
    assert [r.channel for r in results] == list(range(1, 17))
    outcomes = {r.channel: r.outcome for r in results}
    assert outcomes.pop(7) is UnlockOutcome.JAMMED
    assert outcomes.pop(9) is UnlockOutcome.ALREADY_OPEN  # read before the frame went out
    assert set(outcomes.values()) == {UnlockOutcome.OPENED}
    query, unlock_all = UNLOCK_ALL_FRAMES[protocol]
    commands = [e.data["command"] for e in rig.events("frame_received", since)]
    assert commands == [query, unlock_all, query]
    pulses = rig.events("lock_pulse", since, board=2)
    assert sorted(p.channel for p in pulses) == list(range(1, 17))
    assert all(not rig.sim.compartment(2, ch).locked for ch in range(1, 17) if ch != 7)
    assert bus.health(2).consecutive_timeouts == 0  # no reply was awaited, none missed


def test_unlock_all_where_the_board_lacks_it(make_rig):
    rig = make_rig(BoardSpec("kerong-cu48b", 1, pulse_ms=PULSE_MS))
    bus = rig.bus()
    since = rig.mark()
    with pytest.raises(ConfigError, match="kerong-cu48b boards have no unlock-all request"):
        bus.unlock_all(1)
    assert rig.events("frame_received", since) == []


# -- query one channel --------------------------------------------------------------------

# What each family puts on the wire to read one channel (the simulator's name for it).
QUERY_ONE_COMMANDS = {
    "kerong-cu16": "status",  # Kerong replies always carry the whole board
    "kerong-cu48": "status",
    "kerong-cu48b": "status",
    "bcc-8a": "query",  # 80 BOARD CH 33 -> 80 BOARD CH ST
    "modbus-relay": "read_inputs",  # FC02 from the channel's input, count 1
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_channel_status_reads_one_channel(make_rig, protocol):
    sensors = senses_items(protocol)
    rig = make_rig(*specs_for(protocol))
    board = PROTOCOLS[protocol][0][1]
    bus = rig.bus()
    rig.sim.inject(board, "forced_open", channel=3)
    rig.sim.open_door(board, 5, by="forced")
    rig.sim.put_item(board, 5)
    rig.sim.close_door(board, 5)
    since = rig.mark()
    assert bus.channel_status(board, 3) == ChannelStatus(
        3, locked=False, occupied=False if sensors else None
    )
    assert bus.channel_status(board, 5) == ChannelStatus(
        5, locked=True, occupied=True if sensors else None
    )
    frames = rig.events("frame_received", since)
    assert [e.data["command"] for e in frames] == [QUERY_ONE_COMMANDS[protocol]] * 2
    codec = get_protocol(protocol)
    config = bus.config(board)
    assert [e.data["hex"] for e in frames] == [
        codec.query_one(board, config.wire_channel(ch)).pack().hex(" ") for ch in (3, 5)
    ]
    # Every channel agrees with the whole-board status.
    status = bus.status(board)
    assert [bus.channel_status(board, c.channel) for c in status.channels] == status.channels


def test_channel_status_errors_name_the_channel(make_rig):
    rig = make_rig(*specs_for("bcc-8a"))
    bus = rig.bus(retries=0, timeout=0.08, drain_quiet=0.02)
    with pytest.raises(ConfigError, match="channels 1..24, not 25") as err:
        bus.channel_status(1, 25)
    assert err.value.channel == 25
    rig.sim.inject(1, "absent")
    with pytest.raises(BoardTimeout) as err:
        bus.channel_status(1, 4)
    assert (err.value.board, err.value.channel) == (1, 4)
    assert str(err.value).startswith("board 1 channel 4: did not answer a channel query")


# -- line trouble -------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["kerong-cu16", "bcc-8a"])
def test_a_reply_later_than_the_drain_is_flushed_before_the_next_request(make_rig, protocol):
    """The board answers after the timeout and after the drain has given up on it: the late
    frame sits in the port's buffer. It must be thrown away when the next request goes out,
    never taken as that request's answer (it would report the doors as they were)."""
    rig = make_rig(*specs_for(protocol))
    board = PROTOCOLS[protocol][0][0]
    bus = rig.bus(retries=0, timeout=0.08, drain_quiet=0.02)
    rig.sim.inject(board, "slow", seconds=0.4)
    since = rig.mark()
    with pytest.raises(BoardTimeout):
        bus.status(board)
    # Only once the late reply is on the wire (long after the drain ended) does the door move.
    late = rig.sim.truth.wait_for("reply_sent", since=since, timeout=5)
    assert late is not None
    # The simulator logs a reply just before writing it: wait until the late bytes really
    # sit in the master's port, or the next request could go out before they arrive (and
    # then nothing can tell them from its answer, on a real line too).
    transport = bus._transaction.transport
    # (pyserial's socket:// counts 1 for "something there": the reply is written at once.)
    wait_until(lambda: transport.in_waiting > 0, 5, "the late reply in the master's port")
    rig.sim.clear(board, "slow")
    rig.sim.inject(board, "forced_open", channel=2)
    status = bus.status(board)
    assert [c.channel for c in status.channels if not c.locked] == [2]
    assert_matches_sim(status, rig.sim, sensors=senses_items(protocol))
    # The stale reply said every door was shut; the one used is the one sent after it.
    replies = rig.events("reply_sent", since)
    assert len(replies) == 2 and replies[0].seq == late.seq
    assert replies[0].data["hex"] != replies[1].data["hex"]


def test_link_lost_mid_session_then_back(no_close_pause):
    """The serial server (here the simulator's TCP endpoint) goes away under an open bus:
    LinkError naming the port, every time, while it is gone; when it is back the bus opens
    the link again by itself."""
    spec = BoardSpec("kerong-cu16", 1, pulse_ms=PULSE_MS)
    first = Simulator([spec], wire_timing=False, reply_delay=0.0)
    url = first.start_tcp("127.0.0.1", 0)
    tcp_port = int(url.rsplit(":", 1)[1])
    second: Simulator | None = None
    bus = LockBus.open(url, "kerong-cu16", timeout=0.15, retries=0, drain_quiet=0.02)
    try:
        assert all(c.locked for c in bus.status(1).channels)
        first.stop()
        with pytest.raises(LinkError, match="127.0.0.1") as err:
            bus.status(1)
        assert err.value.board is None  # the link, not a board
        with pytest.raises(LinkError, match="cannot open serial port"):
            bus.status(1)  # still gone: the reopen is refused, quickly and clearly
        with pytest.raises(LinkError, match="board 1 channel 2: unlock not sent"):
            bus.unlock(1, 2)

        second = Simulator([spec], wire_timing=False, reply_delay=0.0)
        assert second.start_tcp("127.0.0.1", tcp_port) == url
        second.inject(1, "forced_open", channel=4)
        assert [c.channel for c in bus.status(1).channels if not c.locked] == [4]
        assert bus.unlock(1, 2).outcome is UnlockOutcome.OPENED
        assert [e.channel for e in second.truth.events("lock_pulse")] == [2]
    finally:
        bus.close()
        first.stop()
        if second is not None:
            second.stop()


# -- a cabinet with two buses -------------------------------------------------------------


@pytest.fixture
def cabinet() -> Iterator[Cabinet]:
    with Cabinet() as cab:
        yield cab


def test_two_protocols_in_one_cabinet(cabinet, link, no_close_pause):
    """A cu16 bus and an 8A bus in one cabinet, on one ground-truth log: each master drives
    only its own boards."""
    kerong = cabinet.add_bus(
        "kerong",
        [BoardSpec("kerong-cu16", 1, pulse_ms=PULSE_MS)],
        wire_timing=False,
        reply_delay=0.0,
    )
    eight_a = cabinet.add_bus(
        "8a",
        [BoardSpec("bcc-8a", 1, pulse_ms=PULSE_MS), BoardSpec("bcc-8a", 2, pulse_ms=PULSE_MS)],
        wire_timing=False,
        reply_delay=0.0,
    )
    rigs = [
        Rig(sim, sim.start_pty() if link == "pty" else sim.start_tcp()) for sim in (kerong, eight_a)
    ]
    try:
        cu16_bus, bcc_bus = (rig.bus() for rig in rigs)
        since = cabinet.truth.last_seq
        assert cu16_bus.unlock(1, 5).outcome is UnlockOutcome.OPENED
        assert bcc_bus.unlock(2, 5).outcome is UnlockOutcome.OPENED
        pulses = cabinet.truth.events("lock_pulse", since)
        assert [(p.bus, p.board, p.channel) for p in pulses] == [("kerong", 1, 5), ("8a", 2, 5)]
        assert [c.channel for c in cu16_bus.status(1).channels if not c.locked] == [5]
        assert all(c.locked for c in bcc_bus.status(1).channels)
        assert [c.channel for c in bcc_bus.status(2).channels if not c.locked] == [5]
        assert cu16_bus.scan(range(0, 3)) == [1]
        assert bcc_bus.scan(range(0, 3)) == [1, 2]
    finally:
        for rig in rigs:
            for bus in rig.buses:
                bus.close()
