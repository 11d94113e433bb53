"""What happens while the controller is dead is reported when it comes back.

The controller keeps each door's last known state in SQLite; on the first readings after a
start it compares, and reports a door that closed, was forced or lost its item meanwhile
(``while_down``). A purpose (pickup, drop-off) cut short by a SIGKILL is resolved from what
the door and its sensor show. Controller without broker: the outbox is read from SQLite.
"""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.locker_controller.conftest import LOCKER_KEY, db_events, wait_until
from tests.locker_controller.test_doors import handover, seed, types, wait_event
from tests.locker_controller.test_pickup_offline import load_item
from xinbao.codes import code_for

pytestmark = pytest.mark.slow

DOOR_MOVES = {"door_opened": "opened", "door_forced": "opened", "door_closed": "closed"}


def outbox_moves(tmp_path, number: int) -> list[str]:
    return [
        DOOR_MOVES[e["type"]]
        for e in db_events(tmp_path / "data")
        if e["type"] in DOOR_MOVES and e["compartment"] == number
    ]


def truth_moves(sim, board: int, channel: int, since: int) -> list[str]:
    found = sim.truth.events(("door_opened", "door_closed"), since, board=board, channel=channel)
    return ["opened" if e.kind == "door_opened" else "closed" for e in found]


def of(tmp_path, kind: str, number: int) -> list[dict]:
    return [
        e for e in db_events(tmp_path / "data") if e["type"] == kind and e["compartment"] == number
    ]


def door_seen(ctl, number: int, is_open: bool) -> bool:
    return ctl.status()["doors"][str(number)] is is_open


def test_door_closed_while_the_controller_was_dead(tmp_path, sim, make_controller):
    load_item(sim, 1, 3)
    seed(tmp_path, handover(5, "pickup", 3, 31, "deposited"))
    since = sim.truth.last_seq
    ctl = make_controller()
    ctl.start()
    wait_until(lambda: door_seen(ctl, 3, False), 10, "door 3 seen shut")
    opened = ctl.code(code_for(LOCKER_KEY, 31))
    assert opened.status_code == 200 and opened.json()["outcome"] == "opened", opened.text
    wait_event(tmp_path, "door_opened", compartment=3)
    ctl.kill()

    sim.take_item(1, 3)
    sim.close_door(1, 3)
    ctl.start()
    closed = wait_event(tmp_path, "door_closed", compartment=3)
    assert closed["data"]["while_down"] is True
    collected = wait_event(tmp_path, "collected", compartment=3)
    assert collected["data"]["handover_id"] == 5
    assert of(tmp_path, "item_removed", 3)[0]["data"] == {"while_down": True}
    seen = types(tmp_path)
    assert seen.index("door_closed") < seen.index("collected")
    assert outbox_moves(tmp_path, 3) == truth_moves(sim, 1, 3, since) == ["opened", "closed"]
    refused = ctl.code(code_for(LOCKER_KEY, 31))
    assert refused.status_code == 400 and refused.json()["reason"] == "used"

    # A second restart with nothing moved reports nothing again: the state was kept.
    ctl.stop()
    ctl.start()
    sim.open_door(1, 1, by="forced")  # a marker: once it is seen, door 3 was polled too
    wait_event(tmp_path, "door_forced", compartment=1)
    assert outbox_moves(tmp_path, 3) == ["opened", "closed"]
    assert len(of(tmp_path, "item_removed", 3)) == 1
    assert len(of(tmp_path, "collected", 3)) == 1


def test_door_forced_while_the_controller_was_dead(tmp_path, sim, make_controller):
    since = sim.truth.last_seq
    ctl = make_controller()
    ctl.start()
    wait_until(lambda: door_seen(ctl, 2, False), 10, "door 2 seen shut")
    ctl.kill()
    sim.open_door(1, 2, by="forced")
    ctl.start()
    forced = wait_event(tmp_path, "door_forced", compartment=2)
    assert forced["data"] == {"while_down": True}
    sim.close_door(1, 2)
    closed = wait_event(tmp_path, "door_closed", compartment=2)
    assert "while_down" not in closed["data"]
    assert "door_opened" not in types(tmp_path)
    assert outbox_moves(tmp_path, 2) == truth_moves(sim, 1, 2, since) == ["opened", "closed"]


def _kill_during_a_slow_unlock(sim, ctl, code: str, board: int, channel: int) -> None:
    """Type ``code`` while the board answers 5 s late and SIGKILL the controller as soon as
    the lock pulse happened: the unlock's reply (and so its unlock_sent) never comes."""
    sim.inject(board=board, fault="slow", seconds=5.0)
    since = sim.truth.last_seq
    errors: list[BaseException] = []

    def type_code() -> None:
        try:
            ctl.code(code)
        except httpx.HTTPError as err:  # the controller dies under the request
            errors.append(err)

    typing = threading.Thread(target=type_code, name="kiosk-user")
    typing.start()
    try:
        pulse = sim.truth.wait_for("lock_pulse", since=since, board=board, channel=channel)
        assert pulse is not None, "the controller never pulsed the lock"
        ctl.kill()
    finally:
        typing.join(15)
    assert errors, "the unlock finished before the kill: the window under test was missed"
    sim.clear(board=board, fault="slow")


@pytest.mark.parametrize("meanwhile", ["left_open", "taken_and_shut", "jammed"])
def test_sigkill_during_an_unlock_the_board_answers_late(tmp_path, sim, make_controller, meanwhile):
    load_item(sim, 1, 4)
    seed(tmp_path, handover(6, "pickup", 4, 44, "deposited"))
    code = code_for(LOCKER_KEY, 44)
    ctl = make_controller()
    ctl.start()
    wait_until(lambda: door_seen(ctl, 4, False), 10, "door 4 seen shut")
    since = sim.truth.last_seq
    if meanwhile == "jammed":
        sim.inject(board=1, fault="jammed", channel=4)
    _kill_during_a_slow_unlock(sim, ctl, code, 1, 4)
    accepted = of(tmp_path, "code_accepted", 4)
    assert len(accepted) == 1 and accepted[0]["data"]["handover_id"] == 6
    assert of(tmp_path, "unlock_sent", 4) == []  # lost with the process
    if meanwhile == "taken_and_shut":
        sim.take_item(1, 4)
        sim.close_door(1, 4)
    if meanwhile == "jammed":
        sim.clear(board=1, fault="jammed")
        assert sim.compartment(1, 4).door_open is False

    ctl.start()
    sent = wait_event(tmp_path, "unlock_sent", compartment=4)
    assert sent["data"] == {"outcome": "interrupted", "while_down": True}

    if meanwhile == "jammed":
        # The door never opened: the purpose is dropped, the code was not used and works.
        wait_until(lambda: door_seen(ctl, 4, False), 10, "door 4 seen shut")
        again = ctl.code(code)
        assert again.status_code == 200 and again.json()["outcome"] == "opened", again.text
        wait_event(tmp_path, "door_opened", compartment=4)
        assert "while_down" not in of(tmp_path, "door_opened", 4)[0]["data"]
        pulses = 2
    elif meanwhile == "left_open":
        opened = wait_event(tmp_path, "door_opened", compartment=4)
        assert opened["data"] == {"while_down": True}  # ours, not forced
    else:
        opened = wait_event(tmp_path, "door_opened", compartment=4)
        assert opened["data"] == {"while_down": True, "inferred": True}
    if meanwhile != "jammed":
        pulses = 1
    if meanwhile != "taken_and_shut":
        sim.take_item(1, 4)
        sim.close_door(1, 4)
    collected = wait_event(tmp_path, "collected", compartment=4)
    assert collected["data"]["handover_id"] == 6
    assert "door_forced" not in types(tmp_path)
    assert outbox_moves(tmp_path, 4) == truth_moves(sim, 1, 4, since) == ["opened", "closed"]
    # Used now: refused, and the lock is not pulsed again.
    refused = ctl.code(code)
    assert refused.status_code == 400 and refused.json()["reason"] == "used"
    assert len(sim.truth.events("lock_pulse", since, board=1, channel=4)) == pulses
