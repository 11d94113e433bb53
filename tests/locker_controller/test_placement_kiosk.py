"""The allocation rule at the kiosk, controller as a child process, simulator over a pty: a
drop-off code never opens the door a load still holds open, a load whose compartment is on a
silent board goes to the rule's pick and says so, and a load with nowhere to go opens
nothing and tells staff why (issue 10)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from locker_controller.store import Handover
from tests.locker_controller.conftest import LOCKER_KEY, wait_until
from tests.locker_controller.test_doors import seed, wait_event
from tests.locker_controller.test_staff import login, seed_staff
from xinbao.codes import code_for

pytestmark = pytest.mark.slow


def reserved(hid: int, kind: str, compartment: int) -> Handover:
    expires = datetime.now(UTC) + timedelta(days=1)
    return Handover(hid, kind, compartment, "M", 100 + hid, 8, expires, "reserved", f"R-{hid}")


def pulses(sim, board: int, channel: int, since: int = 0) -> int:
    return len(sim.truth.events("lock_pulse", since, board=board, channel=channel))


def test_a_dropoff_code_never_opens_the_door_a_load_holds_open(tmp_path, sim, make_controller):
    """The cloud (wrongly) reserved 3 for a drop-off while a load used it. Before: the code
    opened 3 again, took over the load's purpose, the load was never reported and the
    documents went on top of the licence."""
    seed(tmp_path, reserved(1, "pickup", 3))
    seed_staff(tmp_path)
    ctl = make_controller()
    ctl.start()
    token = login(ctl, "S001").json()["token"]
    loaded = ctl.post("/api/staff/load", {"token": token, "handover_id": 1})
    assert loaded.status_code == 200 and loaded.json()["compartment"] == 3, loaded.text
    wait_until(lambda: ctl.status()["doors"]["3"] is True, 10, "door 3 seen open")
    # While the door stands open, a sync from a cloud that believes 3 free reserves it for
    # a drop-off (written as the sync would leave it).
    seed(tmp_path, reserved(2, "dropoff", 3))

    opened = ctl.code(code_for(LOCKER_KEY, 102))
    assert opened.status_code == 200, opened.text
    assert opened.json()["compartment"] == 4  # the rule's pick: 3 is held by the load
    accepted = wait_event(tmp_path, "code_accepted", handover_id=2)
    assert (accepted["data"]["planned"], accepted["data"]["deviation"]) == (3, "held")
    assert pulses(sim, 1, 3) == 1 and pulses(sim, 1, 4) == 1

    sim.put_item(1, 3)
    sim.close_door(1, 3)
    load = wait_event(tmp_path, "deposited", handover_id=1)
    assert load["compartment"] == 3 and "planned" not in load["data"]
    sim.put_item(1, 4)
    sim.close_door(1, 4)
    drop = wait_event(tmp_path, "deposited", handover_id=2)
    assert drop["compartment"] == 4
    assert (drop["data"]["planned"], drop["data"]["deviation"]) == (3, "held")


def test_a_load_on_a_silent_board_goes_elsewhere_or_nowhere(tmp_path, sim, make_controller):
    seed(tmp_path, reserved(1, "pickup", 5), reserved(2, "pickup", 6))
    seed_staff(tmp_path)
    ctl = make_controller()
    ctl.start()
    sim.inject(board=2, fault="absent")
    wait_event(tmp_path, "board_unreachable", board=2)
    token = login(ctl, "S001").json()["token"]

    moved = ctl.post("/api/staff/load", {"token": token, "handover_id": 1})
    assert moved.status_code == 200 and moved.json()["compartment"] == 3, moved.text
    sent = wait_event(tmp_path, "staff_action", handover_id=1)
    assert (sent["data"]["planned"], sent["data"]["deviation"]) == (5, "board_unreachable")
    sim.put_item(1, 3)
    sim.close_door(1, 3)
    deposited = wait_event(tmp_path, "deposited", handover_id=1)
    assert deposited["compartment"] == 3 and deposited["data"]["planned"] == 5

    # 4 is the last free M on board 1; someone forces it and leaves something in it (too
    # fast for the door to be seen open: only the sensor knows).
    sim.open_door(1, 4, by="forced")
    sim.put_item(1, 4)
    sim.close_door(1, 4)
    since = sim.truth.last_seq
    wait_event(tmp_path, "item_detected", compartment=4)
    refused = ctl.post("/api/staff/load", {"token": token, "handover_id": 2})
    assert refused.status_code == 503, refused.text
    body = refused.json()
    assert body["reason"] == "compartments_unavailable"
    assert body["detail"] == (
        "no free compartment of size M: board 2 does not answer: compartments 5-8 unavailable"
    )
    assert "repair" in body["message_en"]
    assert sim.truth.events("lock_pulse", since) == []  # never a door onto the stray item
