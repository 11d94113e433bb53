"""The cloud follows the cabinet to where an item really is (issue 10), against a real
Mosquitto with a fake locker: a deposit in another compartment moves the handover, both
compartments and the audit trail and tells staff; a reservation it displaced moves too and
reaches the locker; a resend names the truth; compartments on a silent board or behind a
jammed door are not offered, and the refusal says why (staff) in the applicant's words."""

from collections.abc import Iterator

import pytest
from sqlmodel import Session, select

from cloud_api.models.locker import Compartment
from tests.e2e.conftest import BACKENDS, LOCKER_ID
from tests.support.mqtt_clients import FakeLocker
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def cloud(make_cloud, db_url, broker):
    # Resends at once: the test asks right after the deposit's SMS.
    return make_cloud(db_url, broker.url(), resend_min_interval_seconds=0)


@pytest.fixture
def locker(broker, cloud) -> Iterator[FakeLocker]:
    fake = FakeLocker(broker.port, LOCKER_ID, cloud.locker_key())
    yield fake
    fake.close()


def handover(cloud, hid: int) -> dict:
    r = cloud.client.get(f"/api/v1/handovers/{hid}", headers=cloud.integrator)
    assert r.status_code == 200, r.text
    return r.json()


def start_load(cloud, number: str, size: str = "M"):
    cloud.record(number, status="approved")
    return cloud.post(
        "/api/v1/staff/loads", {"application_number": number, "locker_id": LOCKER_ID, "size": size}
    )


def load(cloud, number: str, size: str = "M") -> dict:
    r = start_load(cloud, number, size)
    assert r.status_code == 201, r.text
    return r.json()


def states(cloud) -> dict[int, tuple[str, int | None]]:
    with Session(cloud.engine) as s:
        rows = s.exec(select(Compartment).where(Compartment.locker_id == LOCKER_ID)).all()
    return {c.number: (c.state, c.handover_id) for c in rows}


def audit(cloud, action: str) -> list[dict]:
    entries = cloud.get("/api/v1/audit?limit=500").json()
    return [e for e in entries if e["action"] == action]


def open_alarms(cloud, kind: str) -> list[dict]:
    found = cloud.get("/api/v1/alarms", params={"open": "true"}).json()
    return [a for a in found if a["kind"] == kind]


def applied(cloud, locker: FakeLocker, type_: str, compartment: int | None = None, **data):
    """Send an event and wait until the cloud has applied (or stored) it."""
    event = locker.event(type_, compartment, **data)
    wait_until(
        lambda: (row := cloud.stored_event(event.event_id)) is not None
        and row.outcome in ("applied", "stored"),
        10,
        f"{type_} applied",
    )
    return event


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
def test_loads_in_the_other_order_swap_and_the_cloud_follows(cloud, locker):
    """Two loads of one size, loaded in the other order by a cabinet that chose its own
    compartment (an older controller): before, the cloud kept the second at 4 while the
    licence lay in 3, so the dashboard, the audit trail and collection named the wrong door."""
    first, second = load(cloud, "XA-PLC-0001"), load(cloud, "XA-PLC-0002")
    assert (first["compartment_number"], second["compartment_number"]) == (3, 4)
    before = len(locker.received("sync_reservations"))

    applied(cloud, locker, "deposited", 3, handover_id=second["id"], by="clerk1")
    assert handover(cloud, second["id"])["compartment_number"] == 3
    assert handover(cloud, second["id"])["state"] == "deposited"
    # The reservation it displaced takes the compartment the second one left.
    assert handover(cloud, first["id"])["compartment_number"] == 4
    assert states(cloud)[3] == ("occupied", second["id"])
    assert states(cloud)[4] == ("reserved", first["id"])

    moves = audit(cloud, "handover.compartment_moved")
    assert {(m["subject"], m["detail"]["from"], m["detail"]["to"]) for m in moves} == {
        (f"handover:{second['id']}", 4, 3),
        (f"handover:{first['id']}", 3, 4),
    }
    [alarm] = open_alarms(cloud, "placement")
    assert alarm["compartment"] == 3
    assert (alarm["data"]["cloud"], alarm["data"]["cabinet"]) == (4, 3)
    assert "compartment 3, not 4" in alarm["data"]["message"]

    # The locker hears where the displaced reservation went.
    def resynced():
        for command in locker.received("sync_reservations")[before:]:
            for u in command.parsed_payload().upserts:
                if u.handover_id == first["id"]:
                    return u
        return None

    assert wait_until(resynced, 10, "the displaced reservation synced").compartment == 4

    # Collection frees the compartment the licence was really in.
    applied(cloud, locker, "collected", 3, handover_id=second["id"], by="applicant")
    assert states(cloud)[3] == ("free", None)
    assert states(cloud)[4] == ("reserved", first["id"])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_deviation_the_cabinet_explains_reaches_staff_and_a_resend_names_the_truth(
    cloud, locker
):
    h = load(cloud, "XA-PLC-0003")
    assert h["compartment_number"] == 3
    applied(
        cloud,
        locker,
        "deposited",
        5,
        handover_id=h["id"],
        by="clerk1",
        planned=3,
        deviation="jammed",
    )
    assert handover(cloud, h["id"])["compartment_number"] == 5
    assert states(cloud)[3] == ("free", None) and states(cloud)[5] == ("occupied", h["id"])
    [moved] = audit(cloud, "handover.compartment_moved")
    assert moved["detail"] | {"seq": 0} == {
        "from": 3,
        "to": 5,
        "planned": 3,
        "reason": "jammed",
        "seq": 0,
    }
    [alarm] = open_alarms(cloud, "placement")
    assert alarm["data"]["message"].endswith(
        "compartment 5 used instead of 3: its door is jammed"
    )

    before = len(locker.received("sync_reservations"))
    r = cloud.client.post(
        f"/api/v1/handovers/by-ref/{h['ref']}/resend", json={"mobile": "+8613800138000"}
    )
    assert r.status_code == 200, r.text
    sent = wait_until(
        lambda: locker.received("sync_reservations")[before:], 10, "the resend's sync"
    )
    [upsert] = sent[-1].parsed_payload().upserts
    assert (upsert.handover_id, upsert.compartment) == (h["id"], 5)


@pytest.mark.parametrize("db_url", BACKENDS, indirect=True)
def test_a_silent_board_is_not_offered_and_the_refusal_says_why(cloud, locker):
    """Before: the cloud kept reserving compartments on a board its own alarm said was down,
    and the refusal said only 'no free compartment'."""
    load(cloud, "XA-PLC-0004"), load(cloud, "XA-PLC-0005")  # 3 and 4: board 1 is full
    applied(cloud, locker, "board_unreachable", bus=0, board=2, compartments=[5, 6])

    r = start_load(cloud, "XA-PLC-0006")
    assert r.status_code == 409, r.text
    problem = r.json()
    assert "board 2 does not answer: compartment 5 unavailable" in problem["detail"]
    assert problem["unavailable"] == ["board 2 does not answer: compartments 5-6 unavailable"]
    assert "repair" in problem["message_en"] and "维护" in problem["message_zh"]
    assert states(cloud)[5] == ("free", None)

    applied(cloud, locker, "board_recovered", bus=0, board=2)
    r = cloud.post(
        "/api/v1/staff/loads", {"application_number": "XA-PLC-0006", "locker_id": LOCKER_ID}
    )
    assert r.status_code == 201 and r.json()["compartment_number"] == 5, r.text


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_jammed_door_is_not_offered_until_it_opens(cloud, locker):
    applied(cloud, locker, "door_jammed", 3)
    cloud.record("XA-PLC-0007")
    assert cloud.dropoff("XA-PLC-0007")["compartment_number"] == 4
    applied(cloud, locker, "door_opened", 3)
    cloud.record("XA-PLC-0008")
    assert cloud.dropoff("XA-PLC-0008")["compartment_number"] == 3


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_pickup_door_closed_on_the_licence_keeps_it_in_place(cloud, locker):
    h = load(cloud, "XA-PLC-0009")
    applied(cloud, locker, "deposited", 3, handover_id=h["id"], by="clerk1")
    applied(
        cloud,
        locker,
        "item_detected",
        3,
        reason="item_still_inside",
        purpose="pickup",
        handover_id=h["id"],
        by="applicant",
    )
    assert handover(cloud, h["id"])["state"] == "deposited"
    assert states(cloud)[3] == ("occupied", h["id"])
    [alarm] = open_alarms(cloud, "item_still_inside")
    assert alarm["compartment"] == 3
    applied(cloud, locker, "collected", 3, handover_id=h["id"], by="applicant")
    assert open_alarms(cloud, "item_still_inside") == []
