"""Issue 10's scenario on the real stack: cloud (in this process) ⇄ Mosquitto ⇄ the edge
controller (child process) ⇄ the simulator over a pty. Two loads of one size are pending
while a board is down, the staff member loads them at the kiosk in the other order, the
applicants collect: the cloud, the cabinet and the simulated hardware agree on where every
item is at each step, and every lock pulse was one the test asked for.

The cabinet (tests.support.cabinet): board 1 holds S 1-2 and M 3-4, board 2 holds M 5, L 6.
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
from tests.e2e.three_views import WIRING, assert_agree
from tests.support.journey import assert_matches_ground_truth, kiosk_ok
from tests.support.waiting import wait_until
from xinbao.codes import code_for

pytestmark = pytest.mark.slow
STEP_S = 30


class Site:
    """The people at the locker and at the dashboard, and what the test authorised."""

    def __init__(self, cloud, controller, sim, staff_pass, data_dir) -> None:
        self.cloud, self.controller, self.sim = cloud, controller, sim
        self.staff_pass, self.data_dir = staff_pass, data_dir
        self.authorised: Counter[int] = Counter()
        self.token = ""

    def commands_settled(self) -> bool:
        sent = self.cloud.get("/api/v1/commands", params={"limit": 500}).json()
        return bool(sent) and all(c["status"] == "ok" for c in sent)

    def ready(self) -> None:
        path = f"/api/v1/lockers/{LOCKER_ID}"
        wait_until(lambda: self.cloud.get(path).json()["online"], STEP_S, "the locker on line")
        wait_until(self.commands_settled, STEP_S, "the first sync answered")

    def start_load(self, number: str):
        return self.cloud.post(
            "/api/v1/staff/loads",
            {"application_number": number, "locker_id": LOCKER_ID, "size": "M"},
        )

    def handover(self, hid: int) -> dict:
        r = self.cloud.client.get(f"/api/v1/handovers/{hid}", headers=self.cloud.integrator)
        assert r.status_code == 200, r.text
        return r.json()

    def reaches(self, hid: int, state: str) -> dict:
        wait_until(lambda: self.handover(hid)["state"] == state, STEP_S, f"{hid} {state}")
        return self.handover(hid)

    def login(self) -> None:
        self.token = staff_login(self.controller, self.staff_pass)

    def wait_door(self, number: int, is_open: bool) -> None:
        wait_door(self.controller, number, is_open, STEP_S)

    def load_at_kiosk(self, hid: int) -> int:
        """Staff load one licence: the door the kiosk opens gets it, and is closed."""
        opened = kiosk_ok(
            self.controller.post("/api/staff/load", {"token": self.token, "handover_id": hid})
        )
        number = opened["compartment"]
        self.authorised[number] += 1
        self.wait_door(number, True)
        self.sim.put_item(*WIRING[number])
        self.sim.close_door(*WIRING[number])
        self.wait_door(number, False)
        return number

    def collect_with_code(self, handover: dict) -> int:
        """The applicant types the pickup code, takes the licence, closes the door."""
        code = code_for(
            self.cloud.locker_key(), handover["code_counter"], self.cloud.settings.code_digits
        )
        number = kiosk_ok(self.controller.code(code))["compartment"]
        self.authorised[number] += 1
        self.wait_door(number, True)
        self.sim.take_item(*WIRING[number])
        self.sim.close_door(*WIRING[number])
        self.wait_door(number, False)
        return number

    def agree(self, items: dict[int, int]) -> None:
        assert_agree(self.cloud.engine, LOCKER_ID, self.data_dir, self.sim, items)

    def open_alarms(self, kind: str) -> list[dict]:
        found = self.cloud.get("/api/v1/alarms", params={"open": "true"}).json()
        return [a for a in found if a["kind"] == kind]


@pytest.fixture
def site(cloud, controller, sim, staff_pass, tmp_path) -> Site:
    return Site(cloud, controller, sim, staff_pass, tmp_path / "controller" / "data")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_two_pending_loads_of_one_size_while_a_board_is_down(site, cloud, sim):
    """The issue's run: an applicant's drop-off holds 3, two loads are pending (4 for one
    record, 5 on board 2 for the other) and board 2 goes down. Before: loading the second
    record opened 4 (the cabinet did not know the cloud held it for the first), the cloud
    kept the handover at 5, and the first record's licence later went on top."""
    site.ready()
    cloud.record("XA-ONE-0001")
    for number in ("XA-ONE-0002", "XA-ONE-0003", "XA-ONE-0004"):
        cloud.record(number, status="approved")
    dropoff = cloud.dropoff("XA-ONE-0001")
    first = site.start_load("XA-ONE-0002").json()
    second = site.start_load("XA-ONE-0003").json()
    assert [h["compartment_number"] for h in (dropoff, first, second)] == [3, 4, 5]
    wait_until(site.commands_settled, STEP_S, "the reservations at the cabinet")

    sim.inject(board=2, fault="absent")
    [down] = wait_until(
        lambda: site.open_alarms("board_unreachable"), STEP_S, "the board-down alarm"
    )
    assert down["data"]["message"] == "board 2 does not answer: compartments 5-6 unavailable"
    site.login()
    # The second record's door is on the silent board and every other M is held: the kiosk
    # opens nothing (never the first record's 4) and tells staff why.
    since = sim.truth.last_seq
    refused = site.controller.post(
        "/api/staff/load", {"token": site.token, "handover_id": second["id"]}
    )
    assert refused.status_code == 503, refused.text
    assert refused.json()["reason"] == "compartments_unavailable"
    assert "board 2 does not answer: compartment 5 unavailable" in refused.json()["detail"]
    assert sim.truth.events("lock_pulse", since) == []

    # The first record's licence goes where the cloud reserved it.
    assert site.load_at_kiosk(first["id"]) == 4
    first = site.reaches(first["id"], "deposited")
    assert first["compartment_number"] == 4
    site.agree({4: first["id"]})

    # The cloud offers nothing on the silent board either, and says why: staff by board
    # and compartment, applicants in their own words.
    third = site.start_load("XA-ONE-0004")
    assert third.status_code == 409, third.text
    assert "board 2 does not answer: compartment 5 unavailable" in third.json()["detail"]
    assert third.json()["unavailable"] == ["board 2 does not answer: compartments 5-6 unavailable"]
    assert "contact staff" in third.json()["message_en"]

    # Board 2 answers again: the second record's licence goes into its own 5.
    sim.clear(board=2)
    wait_until(lambda: not site.open_alarms("board_unreachable"), STEP_S, "the board back")
    wait_until(lambda: 5 not in site.controller.status()["out_of_service"], STEP_S, "5 back")
    assert site.load_at_kiosk(second["id"]) == 5
    second = site.reaches(second["id"], "deposited")
    assert second["compartment_number"] == 5
    site.agree({4: first["id"], 5: second["id"]})
    assert site.open_alarms("placement") == []  # nothing had to move

    # The drop-off code opens the applicant's own 3, never a door holding a licence.
    code = code_for(cloud.locker_key(), dropoff["code_counter"], cloud.settings.code_digits)
    assert kiosk_ok(site.controller.code(code))["compartment"] == 3
    site.authorised[3] += 1
    site.wait_door(3, True)
    sim.put_item(*WIRING[3])
    sim.close_door(*WIRING[3])
    site.reaches(dropoff["id"], "deposited")
    site.agree({3: dropoff["id"], 4: first["id"], 5: second["id"]})

    # Each applicant's pickup code opens the door that holds their own licence.
    assert site.collect_with_code(second) == 5
    site.reaches(second["id"], "collected")
    assert site.collect_with_code(first) == 4
    site.reaches(first["id"], "collected")
    site.agree({3: dropoff["id"]})
    assert_matches_ground_truth(sim, cloud.engine, LOCKER_ID, site.authorised)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_load_whose_door_is_on_a_dead_board_goes_elsewhere_and_the_cloud_follows(
    site, cloud, sim
):
    """The cloud reserved 5 while board 2 answered; by the time staff load, it does not. The
    cabinet loads into 3 by the shared rule, says so, and the cloud moves the handover,
    frees 5, audits both compartments and tells staff."""
    site.ready()
    cloud.record("XA-ONE-0010")
    cloud.record("XA-ONE-0011")
    cloud.record("XA-ONE-0012", status="approved")
    holds = [cloud.dropoff("XA-ONE-0010"), cloud.dropoff("XA-ONE-0011")]  # 3 and 4
    load = site.start_load("XA-ONE-0012").json()
    assert load["compartment_number"] == 5
    for h in holds:
        r = cloud.client.post(f"/api/v1/handovers/{h['id']}/cancel", headers=cloud.integrator)
        assert r.status_code == 200, r.text
    wait_until(site.commands_settled, STEP_S, "the cabinet up to date")

    sim.inject(board=2, fault="absent")
    wait_until(lambda: site.open_alarms("board_unreachable"), STEP_S, "the board-down alarm")
    site.login()
    assert site.load_at_kiosk(load["id"]) == 3
    moved = site.reaches(load["id"], "deposited")
    assert moved["compartment_number"] == 3
    site.agree({3: load["id"]})

    [alarm] = site.open_alarms("placement")
    assert alarm["compartment"] == 3
    assert (alarm["data"]["cloud"], alarm["data"]["cabinet"]) == (5, 3)
    assert alarm["data"]["message"].endswith(
        "compartment 3 used instead of 5: its lock board does not answer"
    )
    audit = cloud.get("/api/v1/audit?limit=500").json()
    [entry] = [e for e in audit if e["action"] == "handover.compartment_moved"]
    assert entry["subject"] == f"handover:{load['id']}"
    assert (entry["detail"]["from"], entry["detail"]["to"]) == (5, 3)
    assert entry["detail"]["reason"] == "board_unreachable"

    assert site.collect_with_code(moved) == 3
    site.reaches(load["id"], "collected")
    site.agree({})

    # A restart: the full sync is answered with the cabinet's view, and the cloud finds
    # nothing that differs from its own.
    site.controller.stop()
    site.controller.start()
    wait_until(lambda: reconciled(cloud), STEP_S, "the cabinet's view compared")
    assert reconciled(cloud)[-1]["detail"]["differences"] == 0
    assert site.open_alarms("mismatch") == []
    assert_matches_ground_truth(sim, cloud.engine, LOCKER_ID, site.authorised)


def reconciled(cloud) -> list[dict]:
    entries = cloud.get("/api/v1/audit?limit=500").json()
    return [e for e in entries if e["action"] == "locker.reconciled"]
