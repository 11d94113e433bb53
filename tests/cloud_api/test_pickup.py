"""Pickup journey: staff load, SMS after deposit, code, collected, receipt; reminders and
overdue recovery driven by the scheduler with a moved clock."""

from sqlmodel import Session, select

from cloud_api.services.scheduler import Scheduler
from cloud_api.sms.models import SmsMessage
from tests.cloud_api.conftest import ADMIN_PASSWORD, login, make_record
from tests.cloud_api.helpers import assert_problem, code_of


def _approved(world, number="XA-P-1"):
    make_record(world.client, world.integrator_headers, number=number)
    for status in ("documents_received", "approved"):
        r = world.client.post(
            f"/api/v1/records/{number}/transitions",
            json={"status": status},
            headers=world.integrator_headers,
        )
        assert r.status_code == 200, r.text


def _load(world, number="XA-P-1"):
    r = world.client.post(
        "/api/v1/staff/loads",
        headers=world.admin_headers,
        json={"application_number": number, "locker_id": world.locker_id, "size": "S"},
    )
    assert r.status_code == 201, r.text
    return r.json()


def _deposit(world, h):
    r = world.client.post(
        f"/api/v1/lockers/{world.locker_id}/handovers/{h['id']}/deposited",
        headers=world.locker_headers,
    )
    assert r.status_code == 200, r.text
    return r.json()


def _templates(engine, handover_id):
    with Session(engine) as s:
        rows = s.exec(
            select(SmsMessage).where(SmsMessage.handover_id == handover_id).order_by(SmsMessage.id)
        ).all()
        return [m.template for m in rows]


def _check(world, code):
    return world.client.post(
        f"/api/v1/lockers/{world.locker_id}/codes/check",
        json={"code": code},
        headers=world.locker_headers,
    ).json()


def test_pickup_journey(world, settings, engine, app, console):
    _approved(world)
    h = _load(world)
    assert h["kind"] == "pickup" and h["state"] == "reserved" and h["code_counter"] is not None
    code = code_of(settings, world.locker_id, h["code_counter"])
    # Counter known at load time (syncable to the locker), but no SMS and no usable code yet.
    assert _templates(engine, h["id"]) == []
    assert _check(world, code)["accepted"] is False

    h = _deposit(world, h)
    assert h["state"] == "deposited"
    assert _templates(engine, h["id"]) == ["pickup_code"]
    app.state.dispatcher.run_once()
    assert any(code in m.body for m in console.inbox())
    record = world.client.get("/api/v1/records/XA-P-1", headers=world.integrator_headers)
    assert record.json()["status"] == "licence_in_locker"

    result = _check(world, code)
    assert result["accepted"] is True and result["kind"] == "pickup"
    r = world.client.post(
        f"/api/v1/lockers/{world.locker_id}/handovers/{h['id']}/collected",
        headers=world.locker_headers,
    )
    assert r.json()["state"] == "collected"
    assert _templates(engine, h["id"]) == ["pickup_code", "receipt"]
    record = world.client.get("/api/v1/records/XA-P-1", headers=world.integrator_headers)
    assert record.json()["status"] == "collected"


def test_load_needs_approved_record(world):
    make_record(world.client, world.integrator_headers, number="XA-P-2")
    r = world.client.post(
        "/api/v1/staff/loads",
        headers=world.admin_headers,
        json={"application_number": "XA-P-2", "locker_id": world.locker_id},
    )
    body = assert_problem(r, 409)
    assert body["from"] == "prereview_passed"


def test_load_needs_staff_not_api_key(world):
    _approved(world)
    r = world.client.post(
        "/api/v1/staff/loads",
        headers=world.integrator_headers,
        json={"application_number": "XA-P-1", "locker_id": world.locker_id},
    )
    assert_problem(r, 403)


def test_reminders_overdue_and_recovery(world, settings, engine, app, clock):
    _approved(world)
    h = _deposit(world, _load(world))
    code = code_of(settings, world.locker_id, h["code_counter"])
    # A second process's scheduler runs the same rounds: still one reminder of each kind.
    other = Scheduler(engine, app.state.policy, [], clock)
    other.reminder_ages = app.state.scheduler.reminder_ages

    clock.advance(hours=25)
    assert app.state.scheduler.run_once().reminders == 1
    assert other.run_once().reminders == 0
    clock.advance(hours=48)
    assert other.run_once().reminders == 1
    assert app.state.scheduler.run_once().reminders == 0
    assert _templates(engine, h["id"]) == ["pickup_code", "reminder", "reminder"]

    clock.advance(days=7)
    assert app.state.scheduler.run_once().overdue == 1
    assert other.run_once().overdue == 0
    assert _templates(engine, h["id"]) == ["pickup_code", "reminder", "reminder", "overdue"]
    # A week on, the morning's staff token has expired: log in again.
    expired = world.client.get("/api/v1/staff/recovery-tasks", headers=world.admin_headers)
    assert "expired" in assert_problem(expired, 401)["detail"]
    world.admin_headers = login(world.client, "admin", ADMIN_PASSWORD)
    tasks = world.client.get("/api/v1/staff/recovery-tasks", headers=world.admin_headers).json()
    assert [t["id"] for t in tasks] == [h["id"]]

    r = world.client.post(f"/api/v1/staff/handovers/{h['id']}/recover", headers=world.admin_headers)
    assert r.json()["state"] == "recovered"
    assert _check(world, code)["accepted"] is False  # the code died with the handover
    record = world.client.get("/api/v1/records/XA-P-1", headers=world.integrator_headers)
    assert record.json()["status"] == "approved"


def test_overdue_code_keeps_working(world, settings, app, clock):
    _approved(world)
    h = _deposit(world, _load(world))
    clock.advance(days=8)
    world.admin_headers = login(world.client, "admin", ADMIN_PASSWORD)
    app.state.scheduler.run_once()
    assert _check(world, code_of(settings, world.locker_id, h["code_counter"]))["accepted"]
    r = world.client.post(
        f"/api/v1/lockers/{world.locker_id}/handovers/{h['id']}/collected",
        headers=world.locker_headers,
    )
    assert r.json()["state"] == "collected"


def test_recover_before_overdue_is_illegal(world):
    _approved(world)
    h = _deposit(world, _load(world))
    body = assert_problem(
        world.client.post(
            f"/api/v1/staff/handovers/{h['id']}/recover", headers=world.admin_headers
        ),
        409,
    )
    assert (body["from"], body["to"]) == ("deposited", "recovered")
