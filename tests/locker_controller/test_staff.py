"""Staff at the cabinet over the kiosk API: the task list, collect, recover, maintenance and
the roles synced with each member. Controller without broker, outbox read from SQLite."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from locker_controller.store import Handover, StaffMember, Store
from tests.locker_controller.conftest import LOCKER_ID, LOCKER_KEY, wait_until
from tests.locker_controller.test_doors import handover, seed, types, wait_event
from tests.locker_controller.test_pickup_offline import load_item
from tests.support.passes import pass_now

pytestmark = pytest.mark.slow

ROLES = {"S001": ["staff"], "L001": ["loader"], "T001": ["technician"], "N001": []}


def seed_staff(tmp_path: Path) -> None:
    store = Store(tmp_path / "data" / "controller.sqlite3")
    store.replace_staff(
        StaffMember(no, f"name of {no}", ROLES[no]) for no in ROLES
    )
    store.close()


def seed_world(tmp_path: Path, sim) -> None:
    """A drop-off waiting in 2, an overdue licence in 6, a licence to load, a fresh pickup."""
    load_item(sim, 1, 2)
    load_item(sim, 2, 2)
    load_item(sim, 2, 3)
    seed(
        tmp_path,
        handover(21, "dropoff", 2, 201, "deposited"),
        handover(22, "pickup", 6, 202, "overdue"),
        handover(23, "pickup", 7, 203, "deposited"),  # not due yet: no task
        Handover(24, "pickup", None, "M", 204, 8, None, "reserved", "REC-24"),
    )
    seed_staff(tmp_path)


def login(ctl, staff_no: str) -> httpx.Response:
    return ctl.post("/api/staff/login", {"staff_no": staff_no, "staff_pass": staff_pass(staff_no)})


def staff_pass(staff_no: str, counter: int = 0) -> str:
    """The pass the cloud would issue this member for the test cabinet."""
    return pass_now(LOCKER_KEY, LOCKER_ID, staff_no, counter)


def tasks(ctl, token: str | None, scheme: str = "Bearer") -> httpx.Response:
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    return httpx.get(ctl.kiosk + "/api/staff/tasks", headers=headers, timeout=10)


def ids(items: list[dict]) -> list[int]:
    return [t["handover_id"] for t in items]


def test_task_list_collect_and_recover(tmp_path, sim, make_controller):
    seed_world(tmp_path, sim)
    ctl = make_controller()
    ctl.start()
    logged_in = login(ctl, "S001")
    assert logged_in.status_code == 200, logged_in.text
    body = logged_in.json()
    token = body["token"]
    assert body["actions"] == ["load", "collect", "recover"]
    listed = tasks(ctl, token).json()
    assert ids(listed["load"]) == [24] and listed["load"][0]["record_ref"] == "REC-24"
    assert ids(listed["collect"]) == [21] and listed["collect"][0]["compartment"] == 2
    assert ids(listed["recover"]) == [22] and listed["recover"][0]["compartment"] == 6
    assert "compartments" not in listed  # no maintenance for the "staff" role

    collect = ctl.post("/api/staff/collect", {"token": token, "compartment": 2})
    assert collect.status_code == 200 and collect.json()["outcome"] == "opened", collect.text
    assert sim.compartment(1, 2).door_open is True
    sim.take_item(1, 2)
    sim.close_door(1, 2)
    collected = wait_event(tmp_path, "collected", compartment=2)
    assert collected["data"]["handover_id"] == 21 and collected["data"]["by"] == "S001"

    recover = ctl.post("/api/staff/recover", {"token": token, "compartment": 6})
    assert recover.status_code == 200 and recover.json()["outcome"] == "opened", recover.text
    sim.take_item(2, 2)
    sim.close_door(2, 2)
    recovered = wait_event(tmp_path, "staff_action", compartment=6, action="recovered")
    assert recovered["data"]["handover_id"] == 22 and recovered["data"]["by"] == "S001"

    after = tasks(ctl, token).json()
    assert after["collect"] == [] and after["recover"] == []
    # Nothing left there to collect or recover: refused, the doors stay shut.
    again = ctl.post("/api/staff/collect", {"token": token, "compartment": 2})
    assert again.status_code == 409 and again.json()["reason"] == "no_handover"
    wrong_kind = ctl.post("/api/staff/recover", {"token": token, "compartment": 2})
    assert wrong_kind.status_code == 409  # 2 held documents, not a licence
    assert sim.compartment(1, 2).door_open is False

    ctl.post("/api/staff/logout", {"token": token})
    assert tasks(ctl, token).status_code == 401


def test_tasks_need_a_live_session(tmp_path, sim, make_controller):
    seed_world(tmp_path, sim)
    ctl = make_controller(extra="staff_session_s = 2.0")
    ctl.start()
    for bad in (tasks(ctl, None), tasks(ctl, "nope"), tasks(ctl, "x", scheme="Basic")):
        assert bad.status_code == 401 and bad.json()["reason"] == "no_session"
    assert tasks(ctl, "x" * 200).status_code == 422
    token = login(ctl, "S001").json()["token"]
    assert tasks(ctl, token).status_code == 200
    # staff_session_s without a door action: the session is over.
    wait_until(lambda: tasks(ctl, token).status_code == 401, 10, "the idle session to end")
    late = ctl.post("/api/staff/collect", {"token": token, "compartment": 2})
    assert late.status_code == 401 and late.json()["reason"] == "no_session"
    assert sim.compartment(1, 2).door_open is False


def test_roles_decide_what_a_member_may_open(tmp_path, sim, make_controller):
    seed_world(tmp_path, sim)
    ctl = make_controller()
    ctl.start()
    loader = login(ctl, "L001").json()
    assert loader["actions"] == ["load"] and ids(loader["load"]) == [24]
    assert "collect" not in loader and "recover" not in loader
    refused = ctl.post("/api/staff/collect", {"token": loader["token"], "compartment": 2})
    assert refused.status_code == 403 and refused.json()["reason"] == "not_permitted"
    assert refused.json()["message_en"] == "You are not allowed to do this."
    assert sim.compartment(1, 2).door_open is False
    audited = wait_event(tmp_path, "code_refused", reason="staff_not_permitted")
    assert audited["data"] == {
        "reason": "staff_not_permitted",
        "staff_no": "L001",
        "action": "collect",
    }

    staff = login(ctl, "S001").json()
    no_maintenance = ctl.post("/api/staff/maintenance", {"token": staff["token"], "compartment": 1})
    assert no_maintenance.status_code == 403
    technician = login(ctl, "T001").json()
    assert technician["actions"] == ["maintenance"]
    assert [c["number"] for c in technician["compartments"]] == list(range(1, 9))
    opened = ctl.post("/api/staff/maintenance", {"token": technician["token"], "compartment": 1})
    assert opened.status_code == 200 and sim.compartment(1, 1).door_open is True

    nobody = login(ctl, "N001")
    assert nobody.status_code == 403 and nobody.json()["reason"] == "not_permitted"
    assert "lockout" not in types(tmp_path)  # proven identities are not guesses
    kinds = types(tmp_path)
    assert kinds.count("staff_login") == 3  # L001, S001, T001; not N001


def test_load_goes_to_the_compartment_the_cloud_reserved(tmp_path, sim, make_controller):
    seed(
        tmp_path,
        Handover(31, "pickup", 4, "M", 301, 8, None, "reserved", "REC-31"),
        handover(32, "dropoff", None, 302, "reserved", expires_in=timedelta(hours=1)),
    )
    seed_staff(tmp_path)
    ctl = make_controller()
    ctl.start()
    token = login(ctl, "S001").json()["token"]
    loaded = ctl.post("/api/staff/load", {"token": token, "handover_id": 31})
    assert loaded.status_code == 200 and loaded.json()["compartment"] == 4, loaded.text
    assert sim.compartment(1, 4).door_open is True
