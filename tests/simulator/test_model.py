"""Physical model of a compartment: latch, spring door, faults on the door, items, polarity."""

from __future__ import annotations

import time

import pytest

from simulator import BoardSpec, CompartmentEmpty, DoorClosed, DoorLocked, FaultError, SpecError


def cu16(**kw):
    return BoardSpec(protocol="kerong-cu16", address=1, **kw)


def test_pulse_springs_door_open_and_it_stays_open_until_closed(make_sim):
    sim = make_sim(cu16(pulse_ms=20))
    board = sim.board(1)
    board.unlock(3)
    assert sim.compartment(1, 3).door_open and not sim.compartment(1, 3).locked
    time.sleep(0.05)  # the pulse is over; the door stays open
    state = sim.compartment(1, 3)
    assert state.door_open and not state.pulsing and not state.locked
    assert sim.close_door(1, 3)
    assert sim.compartment(1, 3).locked
    assert [e.by for e in sim.truth.events(("door_opened", "door_closed"))] == [
        "command",
        "tester",
    ]


def test_jammed_door_stays_shut_and_relatches_after_pulse(make_sim):
    sim = make_sim(cu16(pulse_ms=20))
    sim.inject(1, "jammed", channel=3)
    sim.board(1).unlock(3)
    assert not sim.compartment(1, 3).door_open
    assert sim.compartment(1, 3).pulsing  # the latch is back only while the coil is on
    time.sleep(0.05)
    assert sim.compartment(1, 3).locked
    assert sim.truth.events("lock_pulse")[0].data["jammed"] is True
    assert sim.truth.events("door_opened") == []
    sim.board(1).unlock(4)  # the jam is on channel 3 only
    assert sim.compartment(1, 4).door_open


def test_forced_open_needs_no_command(make_sim):
    sim = make_sim(cu16())
    with pytest.raises(DoorLocked):
        sim.open_door(1, 5)
    sim.inject(1, "forced_open", channel=5)
    assert sim.compartment(1, 5).door_open
    assert sim.truth.events("door_opened")[0].by == "forced"
    assert sim.truth.events("lock_pulse") == []


def test_left_open_door_does_not_close_until_cleared(make_sim):
    sim = make_sim(cu16())
    sim.board(1).unlock(2)
    sim.inject(1, "left_open", channel=2)
    assert sim.close_door(1, 2) is False
    assert sim.compartment(1, 2).door_open
    assert sim.truth.events("close_blocked")[0].channel == 2
    assert sim.clear(1, "left_open") == 1
    assert sim.close_door(1, 2) is True
    state = sim.compartment(1, 2)  # re-latched; reads locked once the 500 ms pulse ends
    assert state.latched and not state.door_open


def test_items_only_while_open(make_sim):
    sim = make_sim(cu16())
    with pytest.raises(DoorClosed):
        sim.put_item(1, 1)
    sim.board(1).unlock(1)
    with pytest.raises(CompartmentEmpty):
        sim.take_item(1, 1)
    assert sim.put_item(1, 1) == 1
    sim.close_door(1, 1)
    assert sim.compartment(1, 1).occupied
    with pytest.raises(DoorClosed):
        sim.take_item(1, 1)
    assert sim.board(1).sensors()[0] == 1


def test_polarity_inversion(make_sim):
    sim = make_sim(cu16(), BoardSpec(protocol="kerong-cu16", address=2, locked_level=0))
    sim.board(1).unlock(1)
    sim.board(2).unlock(1)
    assert sim.board(1).levels()[:2] == [0, 1]
    assert sim.board(2).levels()[:2] == [1, 0]


def test_no_spring_door_waits_for_someone_to_pull_it(make_sim):
    sim = make_sim(cu16(spring_open=False, pulse_ms=10))
    sim.board(1).unlock(1)
    time.sleep(0.03)
    state = sim.compartment(1, 1)
    assert not state.door_open and not state.latched and not state.locked
    assert sim.open_door(1, 1) is True
    sim.close_door(1, 1)
    assert sim.compartment(1, 1).locked


@pytest.mark.parametrize(
    "kwargs",
    [
        {"protocol": "kerong-cu99", "address": 1},
        {"protocol": "kerong-cu16", "address": 16},
        {"protocol": "kerong-cu16", "address": 1, "channels": 17},
        {"protocol": "modbus-relay", "address": 0},
        {"protocol": "kerong-cu16", "address": 1, "locked_level": 2},
        {"protocol": "bcc-8a", "address": 1, "channels": 8, "status_width": 12},
        {"protocol": "kerong-cu48", "address": 1, "sensors": True},
    ],
)
def test_bad_board_specs_are_refused(kwargs):
    with pytest.raises(SpecError):
        BoardSpec(**kwargs)


def test_bad_bus_and_fault_requests(make_sim):
    with pytest.raises(SpecError):
        make_sim(cu16(), cu16())  # two boards on one address: use the fault instead
    with pytest.raises(SpecError):
        make_sim(cu16(), BoardSpec(protocol="bcc-8a", address=2))
    sim = make_sim(cu16())
    with pytest.raises(FaultError):
        sim.inject(1, "melted")
    with pytest.raises(FaultError):
        sim.inject(1, "absent", channel=3)
    with pytest.raises(FaultError):
        sim.inject(1, "slow", seconds=-1)
    with pytest.raises(FaultError):
        sim.inject(1, "garbage", bytes="zz")
    with pytest.raises(LookupError):
        sim.inject(7, "absent")
    with pytest.raises(LookupError):
        sim.compartment(1, 17)
    assert sim.faults() == []
    assert sim.truth.events() == []
