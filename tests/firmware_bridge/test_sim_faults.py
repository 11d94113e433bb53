"""LockBus against every fault the simulator can inject, checked against its ground truth.

Faults whose handling depends on how bytes arrive (garbage, collisions) run over both links;
the slower ones run each protocol over one link, alternating, so both links see every fault.
"""

from __future__ import annotations

import logging
import threading

import pytest

from firmware_bridge import BoardTimeout, ProtocolError, UnlockOutcome
from simulator import BoardSpec
from tests.firmware_bridge.test_against_simulator import (  # noqa: F401 (fixtures)
    PROTOCOLS,
    PULSE_MS,
    assert_matches_sim,
    link,
    make_rig,
    no_close_pause,
    senses_items,
    specs_for,
)

# Each protocol over one link, alternating, for the faults that cost a timeout or two.
ONE_LINK_EACH = [
    pytest.param(protocol, ("pty", "tcp")[i % 2], id=f"{('pty', 'tcp')[i % 2]}-{protocol}")
    for i, protocol in enumerate(PROTOCOLS)
]


def first_board(protocol: str) -> int:
    return PROTOCOLS[protocol][0][0]


# -- absent -------------------------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "link"), ONE_LINK_EACH)
def test_absent_board_times_out_turns_unreachable_and_recovers(make_rig, protocol):
    rig = make_rig(*specs_for(protocol))
    board, other = PROTOCOLS[protocol][0]
    bus = rig.bus(retries=0, timeout=0.08, drain_quiet=0.02, unreachable_after=3)
    bus.status(board)
    assert bus.health(board).last_seen is not None
    rig.sim.inject(board, "absent")
    for count in (1, 2, 3):
        assert bus.health(board).reachable
        with pytest.raises(BoardTimeout) as err:
            bus.status(board)
        assert err.value.board == board
        assert bus.health(board).consecutive_timeouts == count
    assert not bus.health(board).reachable
    assert bus.health(other).reachable

    # An unlock meanwhile: the frame goes out once, nothing moves, and the bus says so.
    since = rig.mark()
    result = bus.unlock(board, 1)
    assert result.outcome is UnlockOutcome.NO_RESPONSE
    assert len(rig.unlock_frames(since, board)) == 1
    assert rig.events("lock_pulse", since) == []

    rig.sim.clear(board, "absent")
    assert_matches_sim(bus.status(board), rig.sim, sensors=senses_items(protocol))
    health = bus.health(board)
    assert health.reachable and health.consecutive_timeouts == 0


# -- garbage ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_garbage_before_replies_is_skipped(make_rig, protocol):
    rig = make_rig(*specs_for(protocol))
    board = first_board(protocol)
    bus = rig.bus(retries=0)  # every reply must decode on the first attempt
    # What a USB adapter says when it wakes up (DESIGN.md §4).
    rig.sim.inject(board, "garbage", bytes="FA FD 99 99")
    since = rig.mark()
    assert bus.unlock(board, 2).outcome is UnlockOutcome.OPENED
    rig.assert_one_pulse(since, board, 2)
    status = bus.status(board)
    assert [c.channel for c in status.channels if not c.locked] == [2]
    assert_matches_sim(status, rig.sim, sensors=senses_items(protocol))
    replies = rig.events("reply_sent", since)
    assert replies and all(r.data["hex"].startswith("fa fd 99 99") for r in replies)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "noise",
    [
        # Start bytes of every family, each of which must be rejected in turn.
        "02 8A 80 01 02 03",
        # Regression: noise that starts a long frame shorter than the longest one (a stray
        # 80 before an 8A reply, 01 02 05 before a Modbus one) used to leave the decoder
        # "needing more" until the timeout, with the whole reply in the buffer behind it.
        "80 01 02 05",
        "80",
    ],
)
def test_noise_that_looks_like_a_frame_start(make_rig, protocol, noise):
    rig = make_rig(*specs_for(protocol))
    board = first_board(protocol)
    # The board answers (after the noise): room for a busy machine, at no cost when quiet.
    bus = rig.bus(retries=0, timeout=0.5)
    rig.sim.inject(board, "forced_open", channel=3)
    rig.sim.inject(board, "garbage", bytes=noise)
    status = bus.status(board)
    assert [c.channel for c in status.channels if not c.locked] == [3]
    assert_matches_sim(status, rig.sim, sensors=senses_items(protocol))


# -- bad checksum -------------------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "link"), ONE_LINK_EACH)
def test_bad_checksum_is_a_protocol_error_after_retries(make_rig, protocol):
    rig = make_rig(*specs_for(protocol))
    board = first_board(protocol)
    # Nothing late is expected here: a short drain keeps the three attempts quick.
    bus = rig.bus(retries=2, timeout=0.1, drain_quiet=0.02)
    rig.sim.inject(board, "bad_checksum")
    since = rig.mark()
    # An 8A status reply has no length field: spoilt, it reads as a frame still incomplete.
    with pytest.raises(ProtocolError, match="bad checksum|incomplete frame") as err:
        bus.status(board)
    assert err.value.board == board
    assert len(rig.events("frame_received", since)) == 3  # first try and two retries
    assert len(rig.events("reply_sent", since)) == 3

    # An unlock: the garbled acknowledgement is no reason to send it again, and the status
    # read after it cannot be trusted, so the caller hears about it: which lock, and that
    # the unlock did go out.
    since = rig.mark()
    with pytest.raises(ProtocolError) as err:
        bus.unlock(board, 4)
    assert (err.value.board, err.value.channel) == (board, 4)
    message = str(err.value)
    assert message.startswith(f"board {board} channel 4: unlock sent, but reading the board")
    assert message.count(f"board {board}") == 1
    rig.assert_one_pulse(since, board, 4)
    assert rig.sim.compartment(board, 4).door_open


@pytest.mark.parametrize(("protocol", "link"), ONE_LINK_EACH)
def test_bad_checksum_once_is_recovered_on_retry(make_rig, protocol):
    rig = make_rig(*specs_for(protocol))
    board = first_board(protocol)
    # A long drain between attempts leaves the helper thread ample time to clear the fault.
    bus = rig.bus(retries=2, drain_quiet=0.3)
    rig.sim.inject(board, "bad_checksum")
    since = rig.mark()

    def clear_after_first_reply() -> None:
        rig.sim.truth.wait_for("reply_sent", since=since, timeout=5)
        rig.sim.clear(board, "bad_checksum")

    helper = threading.Thread(target=clear_after_first_reply, name="clear-fault")
    helper.start()
    try:
        status = bus.status(board)
    finally:
        helper.join()
    assert_matches_sim(status, rig.sim, sensors=senses_items(protocol))
    assert len(rig.events("frame_received", since)) == 2
    assert bus.health(board).consecutive_timeouts == 0


# -- slow ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "link"), ONE_LINK_EACH)
def test_slow_reply_is_drained_not_taken_for_the_next_answer(make_rig, protocol):
    """The reply comes after the timeout; the bus must swallow it, so the next status is
    the board's state now, not the stale one (a door forced open in between)."""
    rig = make_rig(*specs_for(protocol), wire_timing=True, reply_delay=0.001)
    board = first_board(protocol)
    # Late by 0.2 s against a 0.1 s timeout: it lands inside the quiet drain. The drain waits
    # 0.5 s of silence, so a busy machine that delays the late reply's bytes (0.2 s did not
    # always cover it under the parallel suite) still sees the whole reply drained.
    bus = rig.bus(retries=0, timeout=0.1, drain_quiet=0.5)
    rig.sim.inject(board, "slow", seconds=0.2)
    since = rig.mark()
    with pytest.raises(BoardTimeout):
        bus.status(board)
    late = rig.events("reply_sent", since)
    assert len(late) == 1  # it did go on the wire, while the bus was draining

    rig.sim.clear(board, "slow")
    rig.sim.inject(board, "forced_open", channel=2)
    status = bus.status(board)
    assert [c.channel for c in status.channels if not c.locked] == [2]
    assert_matches_sim(status, rig.sim, sensors=senses_items(protocol))
    assert rig.events("reply_sent", late[0].seq)[0].data["hex"] != late[0].data["hex"]


def test_slow_board_unlock_pulses_once_and_reports_no_response(make_rig):
    """The acknowledgement and the status read both come too late: the outcome is
    no_response even though the door did open (ground truth), and the unlock was not
    repeated. no_response never means "the door stayed shut"."""
    rig = make_rig(
        BoardSpec("kerong-cu16", 1, pulse_ms=PULSE_MS), wire_timing=True, reply_delay=0.001
    )
    bus = rig.bus(retries=1, timeout=0.08, drain_quiet=0.1)
    rig.sim.inject(1, "slow", seconds=0.12)
    since = rig.mark()
    result = bus.unlock(1, 9)
    assert result.outcome is UnlockOutcome.NO_RESPONSE
    rig.assert_one_pulse(since, 1, 9)
    assert [e.by for e in rig.events("door_opened", since)] == ["command"]
    rig.sim.clear(1, "slow")
    assert [c.channel for c in bus.status(1).channels if not c.locked] == [9]


# -- door faults --------------------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "link"), ONE_LINK_EACH)
def test_forced_open_shows_open_with_no_pulse(make_rig, protocol):
    rig = make_rig(*specs_for(protocol))
    board = first_board(protocol)
    bus = rig.bus()
    since = rig.mark()
    rig.sim.inject(board, "forced_open", channel=4)
    status = bus.status(board)
    assert [c.channel for c in status.channels if not c.locked] == [4]
    assert_matches_sim(status, rig.sim, sensors=senses_items(protocol))
    assert [(e.channel, e.by) for e in rig.events("door_opened", since)] == [(4, "forced")]
    assert rig.events("lock_pulse", since) == []
    assert rig.unlock_frames(since, board) == []
    # Asked to open it now, the bus sees it was open already (and pulses once).
    since = rig.mark()
    assert bus.unlock(board, 4).outcome is UnlockOutcome.ALREADY_OPEN
    rig.assert_one_pulse(since, board, 4)


@pytest.mark.parametrize(("protocol", "link"), ONE_LINK_EACH)
def test_left_open_door_keeps_reading_open(make_rig, protocol):
    rig = make_rig(*specs_for(protocol))
    board = first_board(protocol)
    bus = rig.bus()
    assert bus.unlock(board, 1).outcome is UnlockOutcome.OPENED
    rig.sim.inject(board, "left_open", channel=1)
    since = rig.mark()
    assert rig.sim.close_door(board, 1) is False
    assert [e.channel for e in rig.events("close_blocked", since)] == [1]
    assert bus.status(board).channel(1).locked is False
    rig.sim.clear(board, "left_open")
    assert rig.sim.close_door(board, 1) is True
    status = bus.status(board)
    assert all(c.locked for c in status.channels)
    assert_matches_sim(status, rig.sim, sensors=senses_items(protocol))


# -- duplicate address --------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_duplicate_address_is_garbled_never_a_wrong_status(make_rig, protocol, caplog):
    rig = make_rig(*specs_for(protocol))
    board = first_board(protocol)
    # Nothing here is about timing: a timeout that leaves room for a busy machine (0.1 s, twice,
    # ran out under the parallel suite's load and turned a collision into a BoardTimeout).
    bus = rig.bus(retries=1, timeout=0.5, drain_quiet=0.02)
    # Some doors open and some shut, so a collision has real bits to spoil.
    for channel in (1, 3):
        rig.sim.inject(board, "forced_open", channel=channel)
    rig.sim.inject(board, "duplicate_address")
    since = rig.mark()
    with pytest.raises(ProtocolError):
        bus.status(board)
    replies = rig.events("reply_sent", since)
    assert len(replies) == 2 and all(r.data["garbled"] for r in replies)

    # A scan does not list the garbled address as a board, says why in the log, and tells
    # the caller what was heard there.
    with caplog.at_level(logging.WARNING, logger="firmware_bridge"):
        assert bus.scan([board]) == []
    assert f"address {board} answered garbled" in caplog.text
    survey = bus.survey([board, 5])
    assert survey.answered == [] and list(survey.garbled) == [board]
    assert "in reply to" in survey.garbled[board]

    # An unlock still pulses the one real lock once; its outcome cannot be read.
    since = rig.mark()
    with pytest.raises(ProtocolError) as err:
        bus.unlock(board, 5)
    assert err.value.channel == 5 and f"board {board} channel 5: unlock sent" in str(err.value)
    rig.assert_one_pulse(since, board, 5)

    rig.sim.clear(board, "duplicate_address")
    status = bus.status(board)
    assert [c.channel for c in status.channels if not c.locked] == [1, 3, 5]
    assert_matches_sim(status, rig.sim, sensors=senses_items(protocol))
