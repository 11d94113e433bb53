"""The cabinet's own network goes down (the broker and the cloud carry on) while the cloud
changes its mind: the hardware still wins when the link is back.

A drop-off is cancelled in the cloud while the cabinet is off line, so the cabinet never
hears of it; the applicant types the code at the cabinet and puts the documents in. Before:
the cloud ignored the deposit of a cancelled handover (its compartment stayed "free" in the
cloud while it held the documents), and the cancellation, reaching the cabinet on its
return, deleted what the cabinet knew of the item, so the next drop-off code could open
onto it. Now: the cloud follows the cabinet (the handover is deposited after all, audited,
an alarm tells staff), a reservation the cloud made meanwhile on that compartment moves,
and the cabinet never forgets an item it holds.
"""

from collections import Counter

import pytest

from tests.e2e.conftest import LOCKER_ID
from tests.e2e.staffed_cabinet import (  # noqa: F401 (fixtures)
    controller,
    sim,
    staff_login,
    staff_pass,
    uplink,
    wait_door,
)
from tests.e2e.three_views import WIRING, assert_agree, cabinet_view
from tests.support.journey import assert_matches_ground_truth, kiosk_ok
from tests.support.waiting import wait_until
from xinbao.codes import code_for

pytestmark = pytest.mark.slow
STEP_S = 30


def on_line(cloud) -> bool:
    return cloud.get(f"/api/v1/lockers/{LOCKER_ID}").json()["online"]


def settled(cloud) -> bool:
    sent = cloud.get("/api/v1/commands", params={"limit": 500}).json()
    return bool(sent) and all(c["status"] != "sent" for c in sent)


def handover(cloud, hid: int) -> dict:
    r = cloud.client.get(f"/api/v1/handovers/{hid}", headers=cloud.integrator)
    assert r.status_code == 200, r.text
    return r.json()


def code(cloud, h: dict) -> str:
    return code_for(cloud.locker_key(), h["code_counter"], cloud.settings.code_digits)


def deposit(controller, sim, cloud, h: dict) -> int:
    """The applicant types the drop-off code, puts the documents in, shuts the door."""
    number = kiosk_ok(controller.code(code(cloud, h)))["compartment"]
    wait_door(controller, number, True, STEP_S)
    sim.put_item(*WIRING[number])
    sim.close_door(*WIRING[number])
    wait_door(controller, number, False, STEP_S)
    return number


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
def test_drop_off_cancelled_while_the_cabinet_is_off_line(
    cloud, controller, sim, uplink, staff_pass, tmp_path
):
    data_dir = tmp_path / "controller" / "data"
    wait_until(lambda: on_line(cloud), STEP_S, "the locker on line")
    wait_until(lambda: settled(cloud), STEP_S, "the first sync answered")
    cloud.record("XA-OFF-0001")
    cloud.record("XA-OFF-0002")
    first = cloud.dropoff("XA-OFF-0001", size="S")
    assert first["compartment_number"] == 1
    wait_until(lambda: settled(cloud), STEP_S, "the reservation at the cabinet")

    uplink.cut()
    wait_until(lambda: not on_line(cloud), STEP_S, "the cloud seeing the locker off line")
    wait_until(lambda: not controller.status()["online"], STEP_S, "the cabinet off line")
    r = cloud.client.post(f"/api/v1/handovers/{first['id']}/cancel", headers=cloud.integrator)
    assert r.status_code == 200, r.text
    # The cloud believes compartment 1 free again and gives it to the next drop-off.
    second = cloud.dropoff("XA-OFF-0002", size="S")
    assert second["compartment_number"] == 1
    # The applicant, who never heard of the cancellation, drops the documents off.
    assert deposit(controller, sim, cloud, first) == 1

    uplink.restore()
    wait_until(lambda: on_line(cloud), STEP_S, "the locker back on line")
    wait_until(lambda: settled(cloud), STEP_S, "every command answered")
    wait_until(
        lambda: handover(cloud, first["id"])["state"] == "deposited",
        STEP_S,
        "the cloud following the cabinet: the cancelled drop-off deposited after all",
    )
    # The reservation made meanwhile moved to the other S compartment, at both ends.
    wait_until(
        lambda: handover(cloud, second["id"])["compartment_number"] == 2,
        STEP_S,
        "the second drop-off moved off compartment 1",
    )
    wait_until(
        lambda: cabinet_view(data_dir)[2][1] == second["id"], STEP_S, "the cabinet holding 2"
    )
    assert_agree(cloud.engine, LOCKER_ID, data_dir, sim, {1: first["id"]})
    alarms = cloud.get("/api/v1/alarms", params={"open": "true"}).json()
    late = [a for a in alarms if a["kind"] == "placement" and a["compartment"] == 1]
    assert late and late[0]["data"]["reason"] == "deposited_after_end", alarms
    assert "cancelled" in late[0]["data"]["message"], late[0]
    trail = cloud.get("/api/v1/audit", params={"limit": 500}).json()
    assert any(
        e["action"] == "handover.deposited_after_end"
        and e["subject"] == f"handover:{first['id']}"
        and e["detail"]["compartment"] == 1
        for e in trail
    ), [e["action"] for e in trail]
    assert cloud.get("/api/v1/audit/verify").json()["ok"]

    # The second applicant's code opens 2, never 1 with the first one's documents in it.
    assert deposit(controller, sim, cloud, second) == 2
    wait_until(lambda: handover(cloud, second["id"])["state"] == "deposited", STEP_S, "2 in")
    # Staff collect the first applicant's documents like any other drop-off.
    token = staff_login(controller, staff_pass)
    opened = kiosk_ok(controller.post("/api/staff/collect", {"token": token, "compartment": 1}))
    assert opened["compartment"] == 1
    wait_door(controller, 1, True, STEP_S)
    sim.take_item(*WIRING[1])
    sim.close_door(*WIRING[1])
    wait_door(controller, 1, False, STEP_S)
    wait_until(lambda: handover(cloud, first["id"])["state"] == "collected", STEP_S, "collected")
    wait_until(lambda: settled(cloud), STEP_S, "every command answered")
    assert_agree(cloud.engine, LOCKER_ID, data_dir, sim, {2: second["id"]})
    assert_matches_ground_truth(sim, cloud.engine, LOCKER_ID, Counter({1: 2, 2: 1}))
