"""Several schedulers (one per API process) running the same round at the same moment: each
expiry, reminder and overdue transition happens exactly once, with one SMS and one audit
entry. Real threads released by a barrier, each with its own engine as a process would have;
on PostgreSQL they truly overlap, on SQLite the write lock takes them in turn."""

import threading
from collections import Counter

from sqlalchemy import func, select
from sqlmodel import Session

from cloud_api.core.db import make_engine
from cloud_api.models.audit import AuditEntry
from cloud_api.models.handover import Handover
from cloud_api.models.locker import Compartment
from cloud_api.services import audit
from cloud_api.services.scheduler import Scheduler, SchedulerReport
from cloud_api.sms.models import SmsMessage
from tests.cloud_api.conftest import ADMIN_PASSWORD, login, make_record, register_locker

SCHEDULERS = 4
PICKUPS = 5
DROPOFFS = 5
LOCKER = "race-sched"


def _post(world, url, body=None, headers=None, status=200):
    r = world.client.post(url, json=body, headers=headers or world.admin_headers)
    assert r.status_code == status, r.text
    return r.json()


def _setup(world) -> tuple[list[int], list[int]]:
    _, locker_headers = register_locker(
        world.client, world.admin_headers, locker_id=LOCKER, sizes="S" * (PICKUPS + DROPOFFS)
    )
    api = world.integrator_headers
    pickups, dropoffs = [], []
    for i in range(PICKUPS):
        number = f"P-{i}"
        make_record(world.client, api, number=number)
        for status in ("documents_received", "approved"):
            _post(world, f"/api/v1/records/{number}/transitions", {"status": status}, api)
        h = _post(
            world,
            "/api/v1/staff/loads",
            {"application_number": number, "locker_id": LOCKER, "size": "S"},
            status=201,
        )
        deposited = f"/api/v1/lockers/{LOCKER}/handovers/{h['id']}/deposited"
        _post(world, deposited, None, locker_headers)
        pickups.append(h["id"])
    for i in range(DROPOFFS):
        number = f"D-{i}"
        make_record(world.client, api, number=number)
        h = _post(
            world,
            "/api/v1/handovers/dropoff",
            {"application_number": number, "locker_id": LOCKER, "size": "S"},
            api,
            status=201,
        )
        dropoffs.append(h["id"])
    return pickups, dropoffs


def _round(db_url, app, clock) -> SchedulerReport:
    """One round on SCHEDULERS schedulers at once; the reports added up."""
    barrier = threading.Barrier(SCHEDULERS)
    reports: list = [None] * SCHEDULERS

    def run(i):
        engine = make_engine(db_url)
        try:
            scheduler = Scheduler(engine, app.state.policy, [], clock)
            scheduler.reminder_ages = app.state.scheduler.reminder_ages
            barrier.wait()
            reports[i] = scheduler.run_once()
        finally:
            engine.dispose()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(SCHEDULERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(isinstance(r, SchedulerReport) for r in reports), reports
    return SchedulerReport(
        expired=sum(r.expired for r in reports),
        reminders=sum(r.reminders for r in reports),
        overdue=sum(r.overdue for r in reports),
    )


def _sms(engine) -> Counter:
    with Session(engine) as s:
        return Counter(s.scalars(select(SmsMessage.template)).all())


def _audit_actions(engine) -> Counter:
    with Session(engine) as s:
        rows = s.execute(
            select(AuditEntry.action, AuditEntry.detail).where(AuditEntry.actor == "scheduler")
        ).all()
    return Counter(
        f"{action}:{detail.get('to') or detail.get('reason') or detail.get('number')}"
        for action, detail in rows
    )


def test_concurrent_rounds_act_once(world, app, engine, db_url, settings, clock):
    pickups, dropoffs = _setup(world)
    first, second = settings.reminder_hours
    assert _sms(engine) == Counter(pickup_code=PICKUPS, dropoff_code=DROPOFFS)

    clock.advance(hours=first + 1)
    assert _round(db_url, app, clock) == SchedulerReport(reminders=PICKUPS)
    assert _sms(engine)["reminder"] == PICKUPS

    clock.advance(hours=settings.dropoff_reservation_hours - first)
    assert _round(db_url, app, clock) == SchedulerReport(expired=DROPOFFS)

    clock.advance(hours=second - first)
    assert _round(db_url, app, clock) == SchedulerReport(reminders=PICKUPS)

    clock.advance(days=settings.retention_days)
    assert _round(db_url, app, clock) == SchedulerReport(overdue=PICKUPS)
    assert _round(db_url, app, clock) == SchedulerReport()  # nothing left to do

    assert _sms(engine) == Counter(
        pickup_code=PICKUPS, dropoff_code=DROPOFFS, reminder=2 * PICKUPS, overdue=PICKUPS
    )
    assert _audit_actions(engine) == Counter(
        {
            "sms.reminder:1": PICKUPS,
            "sms.reminder:2": PICKUPS,
            "handover.state:expired": DROPOFFS,
            "code.revoked:expired": DROPOFFS,
            "handover.state:overdue": PICKUPS,
        }
    )
    with Session(engine) as s:
        states = Counter(s.scalars(select(Handover.state)).all())
        reminders = s.scalars(select(Handover.reminders_sent).where(Handover.id.in_(pickups)))
        free = s.scalar(
            select(func.count())
            .select_from(Compartment)
            .where(Compartment.locker_id == LOCKER, Compartment.state == "free")
        )
        assert audit.verify(s).ok
    assert states == Counter(overdue=PICKUPS, expired=DROPOFFS)
    assert set(reminders) == {2}
    assert free == DROPOFFS
    # Staff see each overdue pickup once.
    admin = login(world.client, "admin", ADMIN_PASSWORD)
    tasks = world.client.get("/api/v1/staff/recovery-tasks", headers=admin).json()
    assert sorted(t["id"] for t in tasks) == sorted(pickups)
    assert dropoffs
