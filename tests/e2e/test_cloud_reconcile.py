"""Reconciliation on full sync (issue 10), against a real Mosquitto with a fake locker that
answers the full sync with its physical view: every difference becomes a ``mismatch`` alarm
with both views, the cloud corrects itself where the truth is certain (audited), a
compartment with an unexplained item is not offered, and a view that agrees again clears
the alarms. A view older than the events the cloud has applied is not compared."""

from collections.abc import Iterator

import pytest
from sqlmodel import Session, select

from cloud_api.models.locker import Compartment
from tests.e2e.conftest import LOCKER_ID
from tests.support.mqtt_clients import FakeLocker
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def locker(broker, cloud) -> Iterator[FakeLocker]:
    fake = FakeLocker(broker.port, LOCKER_ID, cloud.locker_key())
    yield fake
    fake.close()


def view(seq: int, **changes: dict) -> dict:
    """The cabinet's report: compartments 1-6 empty and shut unless ``changes`` say else
    (keys ``c3`` ... for compartment 3)."""
    found = []
    for n in range(1, 7):
        entry = {"number": n, "door_open": False, "occupied": False, "sensed": False}
        entry.update(changes.get(f"c{n}", {}))
        found.append(entry)
    return {"seq": seq, "compartments": found}


def answer_full_sync(cloud, locker: FakeLocker, report: dict, answered: set) -> None:
    """Come on line (again), wait for the cloud's full sync and answer it with ``report``."""
    locker.offline()
    wait_until(
        lambda: not cloud.get(f"/api/v1/lockers/{LOCKER_ID}").json()["online"], 10, "off line"
    )
    locker.online()

    def full_sync():
        for c in locker.received("sync_reservations"):
            if c.parsed_payload().full and c.request_id not in answered:
                return c
        return None

    command = wait_until(full_sync, 10, "a full sync")
    answered.add(command.request_id)
    locker.reply(command.request_id, result={"upserted": 1, "revoked": 0, "cabinet": report})
    wait_until(
        lambda: (
            next(
                c
                for c in cloud.get("/api/v1/commands").json()
                if c["request_id"] == str(command.request_id)
            )["status"]
            == "ok"
        ),
        10,
        "the reply stored",
    )


def mismatches(cloud) -> dict[int, dict]:
    found = cloud.get("/api/v1/alarms", params={"open": "true"}).json()
    return {a["compartment"]: a["data"] for a in found if a["kind"] == "mismatch"}


def compartment_states(cloud) -> dict[int, tuple[str, int | None]]:
    with Session(cloud.engine) as s:
        rows = s.exec(select(Compartment).where(Compartment.locker_id == LOCKER_ID)).all()
    return {c.number: (c.state, c.handover_id) for c in rows}


def deposited(cloud, locker: FakeLocker, number: str, compartment: int) -> dict:
    cloud.record(number, status="approved")
    r = cloud.post("/api/v1/staff/loads", {"application_number": number, "locker_id": LOCKER_ID})
    assert r.status_code == 201 and r.json()["compartment_number"] == compartment, r.text
    h = r.json()
    event = locker.event("deposited", compartment, handover_id=h["id"], by="clerk1")
    wait_until(lambda: cloud.stored_event(event.event_id), 10, "the deposit stored")
    return h


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_differences_become_alarms_and_the_certain_one_is_corrected(cloud, locker):
    answered: set = set()
    h = deposited(cloud, locker, "XA-REC-0001", 3)
    assert compartment_states(cloud)[3] == ("occupied", h["id"])

    # The cabinet holds H in 4 (its sensor agrees), 3 is empty there, and 5 has an item
    # nobody told anyone about.
    report = view(
        locker.seq,
        c3={},
        c4={"occupied": True, "sensed": True, "holds": h["id"]},
        c5={"sensed": True},
    )
    answer_full_sync(cloud, locker, report, answered)
    found = wait_until(lambda: mismatches(cloud) or None, 10, "the mismatch alarms")
    assert found[3] == {
        "message": f"cloud: #3 holds H-{h['id']}; cabinet: #3 empty, #4 holds H-{h['id']}",
        "corrected": True,
    }
    assert found[5] == {
        "message": "cloud: #5 free; cabinet: #5 empty (sensor: item)",
        "corrected": False,
    }
    assert set(found) == {3, 5}
    # Corrected where certain, audited with both views.
    states = compartment_states(cloud)
    assert states[3] == ("free", None) and states[4] == ("occupied", h["id"])
    r = cloud.client.get(f"/api/v1/handovers/{h['id']}", headers=cloud.integrator)
    assert r.json()["compartment_number"] == 4
    audit = cloud.get("/api/v1/audit?limit=500").json()
    [entry] = [e for e in audit if e["action"] == "handover.compartment_reconciled"]
    assert (entry["detail"]["from"], entry["detail"]["to"]) == (3, 4)

    # 5 holds something unknown: never offered until it is cleared up.
    cloud.record("XA-REC-0002", status="approved")
    r = cloud.post(
        "/api/v1/staff/loads", {"application_number": "XA-REC-0002", "locker_id": LOCKER_ID}
    )
    assert r.status_code == 201 and r.json()["compartment_number"] == 3, r.text
    cloud.record("XA-REC-0003", status="approved")
    r = cloud.post(
        "/api/v1/staff/loads", {"application_number": "XA-REC-0003", "locker_id": LOCKER_ID}
    )
    assert r.status_code == 409, r.text

    # The next view agrees (the stray item was taken out): the alarms clear.
    answer_full_sync(
        cloud,
        locker,
        view(locker.seq, c4={"occupied": True, "sensed": True, "holds": h["id"]}),
        answered,
    )
    wait_until(lambda: not mismatches(cloud), 10, "the mismatch alarms cleared")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_view_older_than_the_applied_events_is_not_compared(cloud, locker):
    answered: set = set()
    h = deposited(cloud, locker, "XA-REC-0004", 3)
    stale = view(locker.seq - 1)  # taken before the deposit: 3 looked empty then
    answer_full_sync(cloud, locker, stale, answered)
    marker = locker.event("door_closed", 1)
    wait_until(lambda: cloud.stored_event(marker.event_id), 10, "a later event stored")
    assert mismatches(cloud) == {}
    assert compartment_states(cloud)[3] == ("occupied", h["id"])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_locker_long_on_line_is_asked_for_its_view(make_cloud, db_url, broker):
    """Full syncs come only when a locker comes on line; one that stays on line for weeks
    is pinged every ``mqtt_view_round_seconds`` and its answer (the cabinet's view) is
    reconciled the same way. Before: a difference arising while on line was never seen."""
    cloud = make_cloud(db_url, broker.url(), mqtt_view_round_seconds=1)
    locker = FakeLocker(broker.port, LOCKER_ID, cloud.locker_key())
    try:
        answer_full_sync(cloud, locker, view(0), set())
        assert mismatches(cloud) == {}
        ping = wait_until(lambda: locker.received("ping"), 10, "a ping while on line")[0]
        # Something sits in 2 that the cloud knows nothing of (put in with a key, say).
        locker.reply(
            ping.request_id,
            result={"pong": True, "cabinet": view(0, c2={"occupied": True, "sensed": True})},
        )
        found = wait_until(lambda: mismatches(cloud), 10, "the difference as an alarm")
        assert list(found) == [2] and "cabinet: #2" in found[2]["message"], found
    finally:
        locker.close()
