"""A queued SMS whose code or handover is no longer live is not sent but marked superseded:
through create_app on the migrated schema, with the app's own dispatcher, on both databases."""


from tests.cloud_api.conftest import ADMIN_PASSWORD, login, reserve_dropoff
from tests.cloud_api.helpers import code_of
from tests.cloud_api.test_pickup import _approved, _check, _deposit, _load

MOBILE = "+8613800138000"


def _outbox(world, handover_id):
    # A fresh log-in: tests move the clock past the token's lifetime.
    admin = login(world.client, "admin", ADMIN_PASSWORD)
    r = world.client.get(
        "/api/v1/sms/outbox", params={"handover_id": handover_id}, headers=admin
    )
    assert r.status_code == 200, r.text
    return {m["template"] + ":" + m["dedupe_key"].rsplit(":", 1)[-1]: m for m in r.json()}


def test_resend_before_dispatch_sends_only_the_new_code(world, app, settings, clock, console):
    h = reserve_dropoff(world)
    old = code_of(settings, world.locker_id, h["code_counter"])
    clock.advance(seconds=61)  # past the resend interval
    r = world.client.post(
        f"/api/v1/handovers/by-ref/{h['ref']}/resend", json={"mobile": MOBILE}
    )
    assert r.status_code == 200, r.text
    new = code_of(settings, world.locker_id, r.json()["code_counter"])

    assert app.state.dispatcher.run_once() == 2
    [sms] = console.inbox()
    assert new in sms.body and old not in sms.body
    rows = sorted(_outbox(world, h["id"]).values(), key=lambda m: m["id"])
    assert [m["status"] for m in rows] == ["superseded", "sent"]
    assert "replaced" in rows[0]["last_error"]
    # Nothing is left to send, and a superseded row is final.
    assert app.state.dispatcher.run_once() == 0


def test_cancelled_reservation_gets_no_code_sms(world, app, console):
    h = reserve_dropoff(world)
    r = world.client.post(f"/api/v1/handovers/{h['id']}/cancel", headers=world.integrator_headers)
    assert r.status_code == 200, r.text
    assert app.state.dispatcher.run_once() == 1
    assert console.inbox() == []
    [row] = _outbox(world, h["id"]).values()
    assert row["status"] == "superseded" and "'cancelled'" in row["last_error"]


def test_expired_reservation_gets_no_code_sms(world, app, settings, clock, console):
    h = reserve_dropoff(world)
    clock.advance(hours=settings.dropoff_reservation_hours + 1)
    assert app.state.scheduler.run_once().expired == 1
    app.state.dispatcher.run_once()
    assert console.inbox() == []
    [row] = _outbox(world, h["id"]).values()
    assert row["status"] == "superseded" and "'expired'" in row["last_error"]


def test_reminder_queued_then_collected_is_not_sent(world, app, settings, clock, console):
    _approved(world)
    h = _deposit(world, _load(world))
    assert app.state.dispatcher.run_once() == 1  # the pickup code itself
    clock.advance(hours=settings.reminder_hours[0] + 1)
    assert app.state.scheduler.run_once().reminders == 1
    # The applicant collects before the dispatcher gets to the reminder.
    assert _check(world, code_of(settings, world.locker_id, h["code_counter"]))["accepted"]
    r = world.client.post(
        f"/api/v1/lockers/{world.locker_id}/handovers/{h['id']}/collected",
        headers=world.locker_headers,
    )
    assert r.status_code == 200, r.text
    assert app.state.dispatcher.run_once() == 2  # the reminder and the receipt
    bodies = [m.body for m in console.inbox()]
    assert len(bodies) == 2 and not any("Reminder" in b for b in bodies)
    rows = _outbox(world, h["id"])
    assert rows["reminder:1"]["status"] == "superseded"
    assert rows["receipt:receipt"]["status"] == "sent"


def test_overdue_notice_after_recovery_is_not_sent(world, app, settings, clock, console):
    _approved(world)
    h = _deposit(world, _load(world))
    app.state.dispatcher.run_once()
    clock.advance(days=settings.retention_days, hours=1)
    report = app.state.scheduler.run_once()
    assert report.overdue == 1
    admin = login(world.client, "admin", ADMIN_PASSWORD)
    r = world.client.post(f"/api/v1/staff/handovers/{h['id']}/recover", headers=admin)
    assert r.status_code == 200, r.text
    app.state.dispatcher.run_once()
    rows = _outbox(world, h["id"])
    assert rows["overdue:overdue"]["status"] == "superseded"
    # The reminders the scheduler queued on the way are superseded as well: no code to use.
    assert {m["status"] for k, m in rows.items() if k.startswith("reminder")} <= {"superseded"}
    assert not any("overdue" in m.body.lower() for m in console.inbox())


def test_a_live_code_sms_is_sent(world, app, settings, console):
    # The check must not hold back what is still true.
    h = reserve_dropoff(world)
    assert app.state.dispatcher.run_once() == 1
    code = code_of(settings, world.locker_id, h["code_counter"])
    assert code in console.inbox()[0].body
