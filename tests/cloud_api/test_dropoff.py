"""Drop-off journey over HTTP: reserve, SMS, code at the locker, deposit, staff collect."""

from sqlmodel import Session, select

from cloud_api.sms.models import SmsMessage
from tests.cloud_api.conftest import locker_body, make_record, register_locker
from tests.cloud_api.helpers import assert_problem, code_of


def _dropoff(world, number="XA-2025-0001", **where):
    body = {"application_number": number, "size": "M"} | (where or {"locker_id": world.locker_id})
    return world.client.post(
        "/api/v1/handovers/dropoff", json=body, headers=world.integrator_headers
    )


def _check(world, code, locker_id=None, headers=None):
    locker_id = locker_id or world.locker_id
    return world.client.post(
        f"/api/v1/lockers/{locker_id}/codes/check",
        json={"code": code},
        headers=headers or world.locker_headers,
    )


def test_full_dropoff_journey(world, settings, engine, app, console):
    c = world.client
    make_record(c, world.integrator_headers)
    r = _dropoff(world)
    assert r.status_code == 201, r.text
    handover = r.json()
    assert handover["state"] == "reserved" and handover["kind"] == "dropoff"
    assert handover["compartment_number"] == 3  # the first M compartment
    code = code_of(settings, world.locker_id, handover["code_counter"])

    # The SMS is queued in the same transaction, without the code; the dispatcher renders it.
    with Session(engine) as s:
        msg = s.exec(select(SmsMessage).where(SmsMessage.handover_id == handover["id"])).one()
        assert msg.template == "dropoff_code"
        assert code not in str(msg.model_dump())
    assert app.state.dispatcher.run_once() == 1
    assert any(code in m.body for m in console.inbox("+8613800138000"))

    detail = c.get(f"/api/v1/lockers/{world.locker_id}", headers=world.admin_headers).json()
    m = next(o for o in detail["occupancy"] if o["size"] == "M")
    assert (m["total"], m["free"]) == (2, 1)

    r = _check(world, code)
    assert r.status_code == 200
    assert r.json() | {} == r.json() and r.json()["accepted"] is True
    assert (r.json()["compartment_number"], r.json()["board"], r.json()["channel"]) == (3, 1, 3)
    # Single use.
    assert _check(world, code).json()["accepted"] is False

    r = c.post(
        f"/api/v1/lockers/{world.locker_id}/handovers/{handover['id']}/deposited",
        headers=world.locker_headers,
    )
    assert r.json()["state"] == "deposited"
    record = c.get("/api/v1/records/XA-2025-0001", headers=world.integrator_headers).json()
    assert record["status"] == "documents_in_locker"
    # The applicant's receipt (issue 13): application number, locker, compartment, time.
    assert app.state.dispatcher.run_once() == 1
    [receipt] = [m.body for m in console.inbox("+8613800138000") if "受理号" in m.body]
    assert "XA-2025-0001" in receipt and "3号箱" in receipt and " box 3, " in receipt, receipt
    assert "审核结果另行短信通知" in receipt and "the result comes by SMS" in receipt, receipt

    waiting = c.get("/api/v1/staff/dropoffs-waiting", headers=world.admin_headers).json()
    assert [h["id"] for h in waiting] == [handover["id"]]
    r = c.post(f"/api/v1/staff/handovers/{handover['id']}/collect", headers=world.admin_headers)
    assert r.json()["state"] == "collected"
    record = c.get("/api/v1/records/XA-2025-0001", headers=world.integrator_headers).json()
    assert record["status"] == "documents_received"
    detail = c.get(f"/api/v1/lockers/{world.locker_id}", headers=world.admin_headers).json()
    assert next(o for o in detail["occupancy"] if o["size"] == "M")["free"] == 2

    # Collecting twice is an illegal transition that names both states.
    r = c.post(f"/api/v1/staff/handovers/{handover['id']}/collect", headers=world.admin_headers)
    body = assert_problem(r, 409)
    assert (body["from"], body["to"]) == ("collected", "collected")

    verdict = c.get("/api/v1/audit/verify", headers=world.admin_headers).json()
    assert verdict["ok"] is True and verdict["checked"] > 8
    actions = [
        e["action"] for e in c.get("/api/v1/audit?limit=500", headers=world.admin_headers).json()
    ]
    for wanted in (
        "code.issued",
        "code.accepted",
        "door.opened",
        "code.refused",
        "handover.state",
        "record.status",
    ):
        assert wanted in actions


def test_dropoff_needs_prereview_passed(world):
    make_record(world.client, world.integrator_headers, status="submitted")
    body = assert_problem(_dropoff(world), 409)
    assert body["from"] == "submitted"


def test_cancel_frees_compartment_and_kills_code(world, settings):
    make_record(world.client, world.integrator_headers)
    h = _dropoff(world).json()
    r = world.client.post(f"/api/v1/handovers/{h['id']}/cancel", headers=world.integrator_headers)
    assert r.json()["state"] == "cancelled"
    assert (
        _check(world, code_of(settings, world.locker_id, h["code_counter"])).json()["accepted"]
        is False
    )
    assert_problem(
        world.client.post(f"/api/v1/handovers/{h['id']}/cancel", headers=world.integrator_headers),
        409,
    )
    # The record can ask again.
    assert _dropoff(world).status_code == 201


def test_no_free_compartment_and_one_dropoff_per_record(world):
    for n in range(3):
        make_record(world.client, world.integrator_headers, number=f"XA-{n}")
    assert _dropoff(world, "XA-0", locker_id=world.locker_id, size="L").status_code == 201
    assert_problem(_dropoff(world, "XA-0"), 409)  # already has an active drop-off
    body = assert_problem(_dropoff(world, "XA-1", locker_id=world.locker_id, size="L"), 409)
    assert "no free compartment" in body["detail"]


def test_dropoff_at_nearest_locker_with_space(world):
    c = world.client
    near, _ = register_locker(
        c, world.admin_headers, locker_id="near", lat=34.30, lon=109.00, sizes="S"
    )
    far, _ = register_locker(
        c, world.admin_headers, locker_id="far", lat=35.0, lon=110.0, sizes="MM"
    )
    found = c.get(
        "/api/v1/lockers/nearest",
        params={"latitude": 34.30, "longitude": 109.0, "size": "M"},
        headers=world.integrator_headers,
    ).json()
    # "near" has no M compartment; the default locker (34.32, 109.03) is next, then "far".
    assert [lk["id"] for lk in found] == [world.locker_id, far]
    assert found[0]["distance_km"] < found[1]["distance_km"]
    make_record(c, world.integrator_headers)
    r = _dropoff(world, latitude=34.30, longitude=109.0)
    assert r.status_code == 201 and r.json()["locker_id"] == world.locker_id


def test_idempotency_key_replays_the_same_reservation(world):
    make_record(world.client, world.integrator_headers)
    headers = world.integrator_headers | {"Idempotency-Key": "req-1"}
    body = {"application_number": "XA-2025-0001", "locker_id": world.locker_id}
    first = world.client.post("/api/v1/handovers/dropoff", json=body, headers=headers)
    again = world.client.post("/api/v1/handovers/dropoff", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    other = world.client.post(
        "/api/v1/handovers/dropoff", json=body | {"size": "L"}, headers=headers
    )
    assert_problem(other, 422)


def test_expired_reservation_frees_compartment(world, settings, app, clock):
    make_record(world.client, world.integrator_headers)
    h = _dropoff(world).json()
    clock.advance(hours=settings.dropoff_reservation_hours + 1)
    # Before the scheduler runs, the expired code is already refused.
    assert (
        _check(world, code_of(settings, world.locker_id, h["code_counter"])).json()["accepted"]
        is False
    )
    assert app.state.scheduler.run_once().expired == 1
    assert app.state.scheduler.run_once().expired == 0
    got = world.client.get(f"/api/v1/handovers/{h['id']}", headers=world.integrator_headers)
    assert got.json()["state"] == "expired"


def test_locker_endpoints_need_that_lockers_key(world):
    c = world.client
    _, other_headers = register_locker(c, world.admin_headers, **{"locker_id": "other"})
    assert_problem(_check(world, "12345678", headers=other_headers), 401)
    assert_problem(
        c.post(f"/api/v1/lockers/{world.locker_id}/codes/check", json={"code": "12345678"}), 401
    )
    assert locker_body()["id"] == world.locker_id
