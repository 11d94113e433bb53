"""Every injected fault is visible to a master on the wire (real pty / socket)."""

from __future__ import annotations

import time

from simulator import BoardSpec
from tests.simulator.conftest import transact

H = bytes.fromhex
STATUS_B1 = H("02 10 30 03 45")  # DESIGN.md §4 cu16 frame format, board 1 status
OK_B1 = H("02 10 35 FF FF 00 00 03 48")


def sum_ok(frame: bytes) -> bool:
    return sum(frame[:-1]) & 0xFF == frame[-1]


def make(make_sim):
    return make_sim(
        BoardSpec(protocol="kerong-cu16", address=1),
        BoardSpec(protocol="kerong-cu16", address=2),
    )


def test_absent_board_is_silent_and_inert_others_answer(make_sim, connect):
    sim = make(make_sim)
    port = connect(sim, timeout=0.3)
    sim.inject(1, "absent")
    assert transact(port, STATUS_B1, 9) == b""
    assert transact(port, H("02 12 31 03 48"), 9) == b""
    assert not sim.compartment(1, 3).door_open  # an unpowered board drives no lock
    assert transact(port, H("02 20 30 03 55"), 9) == H("02 20 35 FF FF 00 00 03 58")
    sim.clear(1)
    assert transact(port, STATUS_B1, 9) == OK_B1


def test_garbage_before_reply(make_sim, connect):
    sim = make(make_sim)
    port = connect(sim)
    sim.inject(1, "garbage")
    assert transact(port, STATUS_B1, 13) == H("FA FD 99 99") + OK_B1
    sim.clear(1, "garbage")
    sim.inject(1, "garbage", bytes="00 02")
    assert transact(port, STATUS_B1, 11) == H("00 02") + OK_B1


def test_bad_checksum(make_sim, connect):
    sim = make(make_sim)
    port = connect(sim)
    sim.inject(1, "bad_checksum")
    reply = transact(port, STATUS_B1, 9)
    assert reply[:-1] == OK_B1[:-1] and not sum_ok(reply)


def test_slow_reply_comes_late(make_sim, connect):
    sim = make(make_sim)
    port = connect(sim, timeout=0.1)
    sim.inject(1, "slow", seconds=0.5)
    assert transact(port, STATUS_B1, 9) == b""  # nothing within the first 0.1 s
    port.timeout = 3
    assert port.read(9) == OK_B1
    sent = sim.truth.events("reply_sent")[0]
    received = sim.truth.events("frame_received")[0]
    assert sent.mono - received.mono >= 0.5  # by construction, not a speed measurement


def test_duplicate_address_garbles_replies(make_sim, connect):
    sim = make(make_sim)
    port = connect(sim)
    sim.inject(1, "duplicate_address")
    reply = transact(port, STATUS_B1, 9)
    assert len(reply) == 9 and reply != OK_B1 and not sum_ok(reply)
    assert sim.truth.events("reply_sent")[0].data["garbled"] is True


def test_jammed_and_forced_seen_in_status(make_sim, connect):
    sim = make_sim(BoardSpec(protocol="kerong-cu16", address=1, pulse_ms=20))
    port = connect(sim)
    sim.inject(1, "jammed", channel=3)
    transact(port, H("02 12 31 03 48"), 9)
    time.sleep(0.05)  # let the 20 ms pulse end
    assert transact(port, STATUS_B1, 9) == OK_B1  # still locked: the door never moved
    sim.inject(1, "forced_open", channel=8)
    assert transact(port, STATUS_B1, 9) == H("02 10 35 7F FF 00 00 03 C8")


def test_noise_between_requests_is_skipped(make_sim, connect):
    sim = make(make_sim)
    port = connect(sim)
    assert transact(port, H("FF 02 05 99") + STATUS_B1, 9) == OK_B1
    assert sim.truth.events("noise_dropped")[0].data["hex"] == "ff 02 05 99"
