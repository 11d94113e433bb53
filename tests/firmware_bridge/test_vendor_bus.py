"""LockBus against the simulator for what tracker issue 12 adds (sources as named in
test_vendor_vectors.py): 8A replies framed on the board's width, 8A batch unlock,
keep-power and pushed door reports, the cu16 pulse-time setting, Modbus pulses rounded up.
Real pyserial over a pty; wire timing off unless the test is about the line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from typer.testing import CliRunner

from firmware_bridge import (
    BoardConfig,
    ChannelStatus,
    ConfigError,
    LockBus,
    ProtocolError,
    UnlockOutcome,
)
from firmware_bridge.cli import EXIT_BAD_ARGUMENT, board_app
from firmware_bridge.protocols import bcc8a
from simulator import BoardSpec, Simulator
from tests.support.waiting import wait_until

PULSE_MS = 50

MakeBus = Callable[..., tuple[Simulator, LockBus]]


@pytest.fixture
def rig() -> Iterator[MakeBus]:
    made: list[tuple[Simulator, LockBus]] = []

    def make(*specs: BoardSpec, configs: list[BoardConfig] | None = None, **options):
        sim = Simulator(list(specs), wire_timing=options.pop("wire_timing", False),
                        reply_delay=0.0)  # fmt: skip
        url = sim.start_pty()
        if configs is None:
            configs = [BoardConfig(s.protocol, s.address, pulse_ms=PULSE_MS) for s in specs]
        options.setdefault("timeout", 0.3)
        bus = LockBus.open(url, specs[0].protocol, boards=configs, **options)
        made.append((sim, bus))
        return sim, bus

    yield make
    for sim, bus in made:
        bus.close()
        sim.stop()


def open_all_but(sim: Simulator, board: int, locked: set[int]) -> None:
    for channel in range(1, sim.board(board).spec.channels + 1):
        if channel not in locked:
            sim.open_door(board, channel, by="forced")


# -- 8A replies framed on the board's width ---------------------------------------------------

# Channels whose input reads 1 in 80 01 00 33 B2 33 33 (S1=B2: 2, 5, 6, 8; S2=33: 9, 10, 13, 14).
HIGH_IN_33_REPLY = {2, 5, 6, 8, 9, 10, 13, 14}


@pytest.mark.parametrize("configured", [None, 24])
def test_bcc8a_reply_holding_33_is_read_whole(rig, configured):
    """The reply 80 01 00 33 B2 33 33 is a whole 24-channel reply: read whole on the first
    poll (on silence, or on the configured width) and on every poll after (on the width)."""
    spec = BoardSpec("bcc-8a", 1, channels=24)
    config = BoardConfig("bcc-8a", 1, status_width=configured)
    sim, bus = rig(spec, configs=[config], retries=0)
    open_all_but(sim, 1, HIGH_IN_33_REPLY)
    for _ in range(3):
        since = sim.truth.last_seq
        status = bus.status(1)
        assert [e.data["hex"] for e in sim.truth.events("reply_sent", since)] == [
            "80 01 00 33 b2 33 33"
        ]
        assert len(status.channels) == 24
        assert {c.channel for c in status.channels if c.locked} == HIGH_IN_33_REPLY
    assert bus.health(1).consecutive_timeouts == 0


def test_bcc8a_fifty_channel_board_reads_first_byte_first(rig):
    """A 56-input board (7 data bytes, channels 1-8 first by default) with 50 locks wired."""
    spec = BoardSpec("bcc-8a", 2, channels=50)
    sim, bus = rig(spec, configs=[BoardConfig("bcc-8a", 2, channels=50, pulse_ms=PULSE_MS)])
    sim.inject(2, "forced_open", channel=1)
    sim.inject(2, "forced_open", channel=50)
    status = bus.status(2)
    assert [c.channel for c in status.channels if not c.locked] == [1, 50]
    assert bus.unlock(2, 49).outcome is UnlockOutcome.OPENED


def test_bcc8a_learnt_width_is_relearnt_when_the_board_changes(make_peer, make_bus):
    """A width learnt from a board is dropped when a reply no longer fits it (the board was
    swapped for a wider one at the same address): the next poll frames on silence again."""
    replies = [b"\x00", bytes.fromhex("00 00 FB")]  # 8 inputs, then 24 (DESIGN's vector)

    def board(request):
        if not isinstance(request, bcc8a.QueryAll):
            return []
        return [(0, bcc8a.BoardStateReply(1, replies[0]).pack())]

    peer = make_peer("bcc-8a", board)
    bus = make_bus(peer.url, "bcc-8a", retries=0, timeout=0.2, drain_quiet=0.02)
    assert len(bus.status(1).channels) == 8
    assert len(bus.status(1).channels) == 8  # two alike: the width is learnt
    replies.pop(0)
    with pytest.raises(ProtocolError, match="in reply to a status query"):
        bus.status(1)  # framed on 8 inputs: the 24-input reply does not fit
    for _ in range(3):
        status = bus.status(1)
        assert len(status.channels) == 24 and not status.channel(3).locked


# A USB adapter hands bytes on in bursts and a loaded host may read them late: the 8A reply
# 80 01 00 33 B2 33 33 can arrive as 80 01 00 33 B2 (which checks out on its own), a pause,
# then 33 33. The split_reply fault makes the simulator do exactly that.


def test_bcc8a_reply_paused_inside_is_read_whole(rig):
    """A pause shorter than the silence an unknown-width reply waits for (16 ms, an FTDI's
    latency timer, and a margin) does not end the reply: read whole from the first poll."""
    spec = BoardSpec("bcc-8a", 1, channels=24)
    sim, bus = rig(spec, configs=[BoardConfig("bcc-8a", 1)], retries=0, timeout=0.5)
    open_all_but(sim, 1, HIGH_IN_33_REPLY)
    sim.inject(1, "split_reply", after=5, seconds=0.04)
    for _ in range(4):
        status = bus.status(1)
        assert len(status.channels) == 24
        assert {c.channel for c in status.channels if c.locked} == HIGH_IN_33_REPLY


def test_bcc8a_wired_channels_rule_out_a_reply_cut_short(rig):
    """A long pause ends the line's silence inside the reply, but the board has 24 locks
    wired: a 1-byte front that checks out cannot be its reply, so the bus waits for the rest."""
    spec = BoardSpec("bcc-8a", 1, channels=24)
    config = BoardConfig("bcc-8a", 1, channels=24)
    sim, bus = rig(spec, configs=[config], retries=0, timeout=0.5)
    open_all_but(sim, 1, HIGH_IN_33_REPLY)
    sim.inject(1, "split_reply", after=5, seconds=0.15)
    for _ in range(3):
        status = bus.status(1)
        assert {c.channel for c in status.channels if c.locked} == HIGH_IN_33_REPLY


def test_bcc8a_width_is_not_learnt_from_a_reply_cut_short(rig):
    """With nothing configured, a reply cut by a long pause is taken short on that poll (the
    line gave no other sign), but the bytes that follow it stop the bus from learning the
    short width; once the line is healthy the true width is learnt and kept."""
    spec = BoardSpec("bcc-8a", 1, channels=24)
    sim, bus = rig(spec, configs=[BoardConfig("bcc-8a", 1)], retries=0, timeout=0.5)
    open_all_but(sim, 1, HIGH_IN_33_REPLY)
    sim.inject(1, "split_reply", after=5, seconds=0.15)
    for _ in range(4):
        since = sim.truth.last_seq
        bus.status(1)
        # The rest of the reply arrives after the bus took the front; the next request finds it.
        wait_until(lambda s=since: sim.truth.events("reply_resumed", s), 2, "the reply's rest")
    sim.clear(1)
    for _ in range(4):  # a short width learnt above would misread all of these
        status = bus.status(1)
        assert {c.channel for c in status.channels if c.locked} == HIGH_IN_33_REPLY


# -- 8A batch unlock, keep power, door reports ------------------------------------------------


def test_bcc8a_batch_unlock(rig):
    sim, bus = rig(BoardSpec("bcc-8a", 1, pulse_ms=PULSE_MS))
    sim.inject(1, "jammed", channel=10)
    since = sim.truth.last_seq
    results = bus.unlock_many(1, [18, 2, 10])
    assert [(r.channel, r.outcome) for r in results] == [
        (2, UnlockOutcome.OPENED),
        (10, UnlockOutcome.JAMMED),
        (18, UnlockOutcome.OPENED),
    ]
    frames = sim.truth.events("frame_received", since)
    assert [e.data["command"] for e in frames] == ["query_all", "batch", "query_all"]
    assert frames[1].data["hex"] == "90 01 02 02 02 93"
    assert sorted(p.channel for p in sim.truth.events("lock_pulse", since)) == [2, 10, 18]
    with pytest.raises(ConfigError, match="channels 1..24"):
        bus.unlock_many(1, [1, 25])


def test_unlock_many_where_the_protocol_lacks_it(make_bus):
    bus = make_bus("loop://", "kerong-cu16")
    with pytest.raises(ConfigError, match="kerong-cu16 boards have no unlock-many request"):
        bus.unlock_many(1, [1, 2])
    with pytest.raises(ConfigError, match="no keep-power request"):
        bus.hold_open(1, 1)


def test_bcc8a_keep_power_holds_a_lock_open(rig):
    sim, bus = rig(BoardSpec("bcc-8a", 1, pulse_ms=PULSE_MS, spring_open=False))
    result = bus.hold_open(1, 4)
    assert result.outcome is UnlockOutcome.OPENED  # the latch is held back
    assert sim.compartment(1, 4).pulsing
    sim.open_door(1, 4)  # staff open it, load it, push it to
    sim.put_item(1, 4)
    sim.close_door(1, 4)
    assert bus.status(1).channel(4).locked is False  # still powered: it does not latch
    assert bus.release_hold(1, 4) == ChannelStatus(4, locked=True, occupied=None)
    assert not sim.compartment(1, 4).pulsing


def test_bcc8a_door_reports_come_without_a_poll(rig):
    sim, bus = rig(BoardSpec("bcc-8a", 1, reports_doors=True))
    bus.status(1)
    since = sim.truth.last_seq
    sim.open_door(1, 6, by="forced")
    reports = bus.door_reports(wait=5)
    assert [(r.board, r.status) for r in reports] == [(1, ChannelStatus(6, False, None))]
    assert sim.truth.events("frame_received", since) == []  # nothing was asked
    assert [e.data["hex"] for e in sim.truth.events("report_sent", since)] == ["82 01 06 00 85"]
    assert bus.latest_status(1)[1].channel(6).locked is False  # the report updated it
    assert bus.door_reports() == []  # each report once

    # A report that arrives while the bus is busy with other requests is not garbage: it
    # is kept, and the requests are answered as usual.
    sim.close_door(1, 6)
    assert bus.status(1).channel(6).locked is True
    reports = bus.door_reports(wait=5)
    assert [r.status for r in reports] == [ChannelStatus(6, True, None)]
    # The report of a door our own unlock opened comes right behind the unlock's reply.
    assert bus.unlock(1, 3).outcome is UnlockOutcome.OPENED
    reports = bus.door_reports(wait=5)
    assert [r.status for r in reports] == [ChannelStatus(3, False, None)]
    assert bus.health(1).consecutive_timeouts == 0


def test_door_reports_wait_ends_empty_on_a_quiet_line(rig):
    sim, bus = rig(BoardSpec("bcc-8a", 1))
    started = time.monotonic()
    assert bus.door_reports(wait=0.2) == []
    assert 0.2 <= time.monotonic() - started < 2
    for bad in (-1, "1", True, float("nan")):
        with pytest.raises(ConfigError, match="wait must be 0 or more seconds"):
            bus.door_reports(wait=bad)


# -- cu16 pulse time ------------------------------------------------------------------------


def test_cu16_pulse_time_through_the_cli(rig):
    sim, bus = rig(BoardSpec("kerong-cu16", 1))
    port = bus._transaction.transport.url
    bus.close()  # one master on the line: the technician's laptop
    since = sim.truth.last_seq
    args = ["pulse-time", "--port", port, "--protocol", "kerong-cu16", "--board", "1"]
    result = CliRunner().invoke(board_app, [*args, "--ms", "245"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "board 1: pulse time 250 ms sent (boards do not confirm it)\n"
    # Nothing answers it, so the command may end before the board has taken the frame.
    stored = sim.truth.wait_for("pulse_time_set", since=since, timeout=5)
    assert stored is not None and stored.data["pulse_ms"] == 250
    [frame] = sim.truth.events("frame_received", since)
    assert frame.data["hex"] == "02 10 37 00 19 03 65"
    sim.board(1).unlock(2)
    assert sim.truth.events("lock_pulse", since)[0].data["duration_s"] == 0.25

    for bad, message in (("0", "pulse time must be"), ("-5", "pulse time must be")):
        result = CliRunner().invoke(board_app, [*args, "--ms", bad])
        assert result.exit_code == EXIT_BAD_ARGUMENT and message in result.stderr
    result = CliRunner().invoke(
        board_app, ["pulse-time", "--port", port, "--protocol", "bcc-8a", "--board", "1",
                    "--ms", "500"],
    )  # fmt: skip
    assert result.exit_code == EXIT_BAD_ARGUMENT and "no pulse-time request" in result.stderr
    assert sim.truth.events("frame_received", frame.seq) == []  # nothing bad was sent


# -- modbus ---------------------------------------------------------------------------------


def test_modbus_pulse_is_never_shorter_than_configured(rig):
    spec = BoardSpec("modbus-relay", 1)
    sim, bus = rig(spec, configs=[BoardConfig("modbus-relay", 1, pulse_ms=250)])
    assert bus.unlock(1, 3).outcome is UnlockOutcome.OPENED
    [pulse] = sim.truth.events("lock_pulse")
    assert pulse.data["duration_s"] == pytest.approx(0.3)
