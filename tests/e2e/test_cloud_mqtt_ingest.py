"""The cloud's MQTT side against a real Mosquitto with a fake locker: ingestion, dedupe,
hostile input, presence, telemetry, alarms, reservation sync and remote open."""

import json
import uuid
from datetime import UTC, datetime

import pytest
from sqlmodel import Session, select

from cloud_api.models.monitoring import LockerCommand, LockerEventRecord
from cloud_api.sms.models import SmsMessage
from tests.e2e.conftest import LOCKER_ID
from tests.support.waiting import wait_until
from xinbao.contract import Channel, CommandReply, LockerEvent, topic

pytestmark = pytest.mark.slow


def rows(cloud, **where) -> list[LockerEventRecord]:
    with Session(cloud.engine) as s:
        query = select(LockerEventRecord)
        for name, value in where.items():
            query = query.where(getattr(LockerEventRecord, name) == value)
        return list(s.exec(query))


def handover(cloud, hid: int) -> dict:
    r = cloud.client.get(f"/api/v1/handovers/{hid}", headers=cloud.integrator)
    assert r.status_code == 200, r.text
    return r.json()


def test_same_event_twice_is_one_row_and_applied_once(cloud, fake_locker):
    cloud.record("XA-E2E-0001")
    h = cloud.dropoff("XA-E2E-0001")
    ev = LockerEvent(
        event_id=uuid.uuid4(),
        seq=1,
        ts=datetime.now(UTC),
        type="deposited",
        compartment=h["compartment_number"],
        data={"handover_id": h["id"], "by": "applicant"},
    )
    fake_locker.publish(Channel.EVENTS, ev.to_bytes())
    fake_locker.publish(Channel.EVENTS, ev.to_bytes())
    fake_locker.seq = ev.seq  # the marker is seq 2: the listing below is by seq
    marker = fake_locker.event("door_closed", 1)  # processed after both copies
    wait_until(lambda: rows(cloud, event_id=str(marker.event_id)), 10, "the marker event")
    stored = rows(cloud, event_id=str(ev.event_id))
    assert len(stored) == 1 and stored[0].outcome == "applied"
    assert handover(cloud, h["id"])["state"] == "deposited"
    waiting = cloud.get("/api/v1/staff/dropoffs-waiting").json()
    assert [w["id"] for w in waiting] == [h["id"]]
    audit = cloud.get("/api/v1/audit?limit=500").json()
    moved = [
        e for e in audit if e["action"] == "handover.state" and e["detail"]["to"] == "deposited"
    ]
    assert len(moved) == 1 and moved[0]["actor"] == f"locker:{LOCKER_ID}"
    events = cloud.get(f"/api/v1/lockers/{LOCKER_ID}/events?limit=10").json()
    assert [e["type"] for e in events] == ["door_closed", "deposited"]


def test_pickup_deposit_sends_code_and_collect_closes_with_receipt(cloud, fake_locker):
    cloud.record("XA-E2E-0002", status="approved")
    r = cloud.post(
        "/api/v1/staff/loads", {"application_number": "XA-E2E-0002", "locker_id": LOCKER_ID}
    )
    assert r.status_code == 201, r.text
    h = r.json()
    # The load reached the locker as a sync with the counter and the reserved compartment.
    sync = wait_until(lambda: fake_locker.received("sync_reservations"), 10, "the load's sync")
    upsert = sync[-1].parsed_payload().upserts[0]
    assert (upsert.handover_id, upsert.kind, upsert.counter) == (
        h["id"],
        "pickup",
        h["code_counter"],
    )
    assert upsert.compartment == h["compartment_number"] == 3 and upsert.size == "M"
    # Staff loaded it into compartment 4 (not the cloud's 3): the cloud follows the locker.
    fake_locker.event("deposited", 4, handover_id=h["id"], by="admin")
    wait_until(lambda: handover(cloud, h["id"])["state"] == "deposited", 10, "deposited")
    assert handover(cloud, h["id"])["compartment_number"] == 4
    fake_locker.event("collected", 4, handover_id=h["id"], by="applicant")
    wait_until(lambda: handover(cloud, h["id"])["state"] == "collected", 10, "collected")
    with Session(cloud.engine) as s:
        templates = [
            m.template for m in s.exec(select(SmsMessage).where(SmsMessage.handover_id == h["id"]))
        ]
    assert sorted(templates) == ["pickup_code", "receipt"]
    record = cloud.client.get("/api/v1/records/XA-E2E-0002", headers=cloud.integrator).json()
    assert record["status"] == "collected"


def test_hostile_and_malformed_messages_are_dropped(cloud, fake_locker, broker):
    cloud.record("XA-E2E-0003")
    h = cloud.dropoff("XA-E2E-0003")
    events = topic(LOCKER_ID, Channel.EVENTS)
    fake_locker.publish_raw(events, b"not json {")
    fake_locker.publish_raw(events, b"[1, 2, 3]")
    fake_locker.publish_raw(events, b'{"event_id": "x"}')
    fake_locker.publish_raw(events, b"{" + b" " * 70_000 + b"}")
    good = LockerEvent(
        event_id=uuid.uuid4(), seq=5, ts=datetime.now(UTC), type="door_closed", compartment=1
    ).model_dump(mode="json")
    fake_locker.publish_raw(events, json.dumps({**good, "locker_id": "XA-OTHER"}).encode())
    fake_locker.publish_raw(
        "xinbao/v1/lockers/NOT-REGISTERED/events",
        LockerEvent(
            event_id=uuid.uuid4(), seq=1, ts=datetime.now(UTC), type="door_closed"
        ).to_bytes(),
    )
    fake_locker.publish_raw(topic(LOCKER_ID, Channel.PRESENCE), b"maybe")
    fake_locker.publish_raw(topic(LOCKER_ID, Channel.TELEMETRY), b'{"ts": 1}', qos=0)
    fake_locker.publish_raw(
        topic(LOCKER_ID, Channel.REPLIES),
        json.dumps({"request_id": str(uuid.uuid4()), "ok": True, "result": {}}).encode(),
    )
    # Another locker's handover named in our payload: kept as a fact, never applied.
    other = cloud.post("/api/v1/lockers", {**_other_locker()}).json()
    cloud.record("XA-E2E-0004")
    h2 = cloud.dropoff("XA-E2E-0004", locker_id=other["id"])
    forged = fake_locker.event("deposited", 3, handover_id=h2["id"], by="applicant")
    marker = fake_locker.event("deposited", 3, handover_id=h["id"], by="applicant")
    wait_until(lambda: handover(cloud, h["id"])["state"] == "deposited", 10, "the good event")
    assert handover(cloud, h2["id"])["state"] == "reserved"
    (refused,) = rows(cloud, event_id=str(forged.event_id))
    assert refused.outcome.startswith("refused:")
    assert {r.event_id for r in rows(cloud)} == {str(forged.event_id), str(marker.event_id)}
    assert cloud.bridge._worker.is_alive()


def _other_locker() -> dict:
    from tests.support.cabinet import locker_body

    return locker_body("XA-E2E-OTHER")


def test_presence_telemetry_and_alarms(cloud, fake_locker):
    locker = cloud.get(f"/api/v1/lockers/{LOCKER_ID}").json()
    assert locker["online"] is False and locker["last_seen_at"] is None
    fake_locker.online()
    wait_until(lambda: cloud.get(f"/api/v1/lockers/{LOCKER_ID}").json()["online"], 10, "online")
    board = {"bus": "/dev/ttyUSB0", "address": 2, "reachable": False, "consecutive_timeouts": 4}
    fake_locker.telemetry(outbox_depth=7, boards=[board])
    wait_until(
        lambda: cloud.get(f"/api/v1/lockers/{LOCKER_ID}").json()["outbox_depth"] == 7,
        10,
        "telemetry",
    )
    listed = cloud.get("/api/v1/lockers").json()
    assert listed[0]["boards"] == [board] and listed[0]["last_seen_at"] is not None

    fake_locker.event("door_left_open", 3)
    fake_locker.event("door_forced", 5)
    fake_locker.event("board_unreachable", None, bus="/dev/ttyUSB0", board=2, compartments=[5, 6])
    fake_locker.offline()

    def open_kinds():
        return sorted(a["kind"] for a in cloud.get("/api/v1/alarms?open=true").json())

    wait_until(lambda: len(open_kinds()) == 4, 10, "four alarms")
    assert open_kinds() == ["board_unreachable", "door_forced", "door_left_open", "locker_offline"]
    assert cloud.get(f"/api/v1/lockers/{LOCKER_ID}").json()["online"] is False
    fake_locker.event("door_left_open", 3)  # still open: no second alarm
    fake_locker.online()
    fake_locker.event("door_closed", 3)
    fake_locker.event("board_recovered", None, bus="/dev/ttyUSB0", board=2)
    wait_until(lambda: open_kinds() == ["door_forced"], 10, "all but the forced door cleared")
    forced = cloud.get("/api/v1/alarms?open=true").json()[0]
    assert forced["compartment"] == 5
    r = cloud.post(f"/api/v1/alarms/{forced['id']}/ack")
    assert r.status_code == 200 and r.json()["acked_by"] == "staff:admin"
    assert cloud.get("/api/v1/alarms?open=true").json() == []
    assert len(cloud.get("/api/v1/alarms").json()) == 4
    assert cloud.post("/api/v1/alarms/999999/ack").status_code == 404
    assert cloud.client.get("/api/v1/alarms").status_code == 401


def test_out_of_order_clear_wins(cloud, fake_locker):
    """door_closed (seq 2) arrives before door_left_open (seq 1): it waits for seq 1, so the
    alarm is raised and then cleared, and none stays open."""
    now = datetime.now(UTC)
    closed = LockerEvent(event_id=uuid.uuid4(), seq=2, ts=now, type="door_closed", compartment=2)
    left = LockerEvent(event_id=uuid.uuid4(), seq=1, ts=now, type="door_left_open", compartment=2)
    fake_locker.publish(Channel.EVENTS, closed.to_bytes())
    wait_until(lambda: [r.outcome for r in rows(cloud)] == ["pending"], 10, "seq 2 held back")
    fake_locker.publish(Channel.EVENTS, left.to_bytes())
    wait_until(lambda: sorted(r.outcome for r in rows(cloud)) == ["applied", "applied"], 10, "both")
    alarms = cloud.get("/api/v1/alarms").json()
    assert len(alarms) == 1 and alarms[0]["cleared_at"] is not None


def test_online_gets_a_full_sync_and_staff(cloud, fake_locker):
    cloud.record("XA-E2E-0005")
    h = cloud.dropoff("XA-E2E-0005")
    first = wait_until(lambda: fake_locker.received("sync_reservations"), 10, "the sync")
    assert [u.handover_id for u in first[0].parsed_payload().upserts] == [h["id"]]
    assert first[0].parsed_payload().upserts[0].compartment == h["compartment_number"]
    r = cloud.post(f"/api/v1/handovers/{h['id']}/cancel", headers=cloud.integrator)
    assert r.status_code == 200, r.text
    revoked = wait_until(lambda: fake_locker.received("sync_reservations")[1:], 10, "revocation")
    assert [x.handover_id for x in revoked[0].parsed_payload().revocations] == [h["id"]]
    cloud.record("XA-E2E-0006")
    h2 = cloud.dropoff("XA-E2E-0006")
    fake_locker.online()
    full = wait_until(
        lambda: [c for c in fake_locker.received("sync_reservations") if c.parsed_payload().full],
        10,
        "a full sync",
    )
    assert [u.handover_id for u in full[0].parsed_payload().upserts] == [h2["id"]]
    staff = wait_until(lambda: fake_locker.received("staff_credentials"), 10, "staff credentials")
    assert staff[0].parsed_payload().staff == []  # the admin has no TOTP yet

    def stored_and_received():
        with Session(cloud.engine) as s:
            sent = s.exec(select(LockerCommand).where(LockerCommand.locker_id == LOCKER_ID)).all()
        received = {str(c.request_id) for c in fake_locker.received()}
        return sent if {c.request_id for c in sent} == received else None

    # Every command stored was sent to the locker, and nothing else. A command is stored
    # before it is published (a resync after an unanswered one may be in flight at this
    # instant), so wait for the two to agree rather than compare once.
    sent = wait_until(stored_and_received, 10, "every stored command received by the locker")
    # The fake locker never answers: each command waits, then times out.
    assert {c.status for c in sent} <= {"sent", "timeout"}


def test_remote_open_outcomes(cloud, fake_locker):
    def respond(command):
        if command.type.value != "unlock":
            return None
        number = command.parsed_payload().compartment
        if number == 1:
            return CommandReply(
                request_id=command.request_id,
                ok=True,
                result={"compartment": 1, "outcome": "opened"},
            )
        if number == 2:
            return CommandReply(
                request_id=command.request_id, ok=False, error="unavailable: out of service"
            )
        return None  # compartment 3: the locker stays silent

    fake_locker.responder = respond
    body = {"locker_id": LOCKER_ID, "reason": "applicant on the phone"}
    opened = cloud.post("/api/v1/staff/remote-opens", {**body, "compartment_number": 1}).json()
    rejected = cloud.post("/api/v1/staff/remote-opens", {**body, "compartment_number": 2}).json()
    silent = cloud.post("/api/v1/staff/remote-opens", {**body, "compartment_number": 3}).json()
    assert opened["status"] == "opened" and opened["request_id"]
    assert rejected["status"] == "rejected" and "out of service" in rejected["detail"]
    assert silent["status"] == "timeout"
    unlock = [
        c for c in fake_locker.received("unlock") if str(c.request_id) == opened["request_id"]
    ]
    assert unlock[0].parsed_payload().staff_no == "admin"
    assert unlock[0].parsed_payload().reason == "applicant on the phone"
    got = cloud.get(f"/api/v1/staff/remote-opens/{opened['id']}").json()
    assert got["status"] == "opened" and got["finished_at"]
    audit = [
        e for e in cloud.get("/api/v1/audit?limit=500").json() if e["action"] == "door.remote_open"
    ]
    assert sorted(e["detail"]["outcome"] for e in audit) == ["opened", "rejected", "timeout"]
    assert cloud.get("/api/v1/staff/remote-opens/999999").status_code == 404
    bad = cloud.post("/api/v1/staff/remote-opens", {**body, "compartment_number": 99})
    assert bad.status_code == 404
