"""JSON views the dashboard needs and the rest of the API does not offer.

- ``GET /api/v1/dashboard/records``: approval records with their handovers (staff). The
  integrators' record endpoints need ``records:write``, which staff do not hold.
- ``GET /api/v1/dashboard/audit/latest``: the newest audit entries, newest first (admins).
  ``/api/v1/audit`` pages forward from a sequence number, so the newest page would otherwise
  need a count first.
- ``GET /api/v1/dashboard/notices``: the drop-offs waiting for staff (staff), for the
  dashboard's badge and notice bar (cloud_api.web.notices).
- ``GET /api/v1/dashboard/alarm-summary``: how many alarms are open, in all and per locker
  (staff), for the alarm badge in the navigation and the marker in the lockers list; one
  grouped count, cheap enough for every open dashboard to ask every few seconds.
"""

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import func, select
from sqlmodel import SQLModel

from cloud_api.api.deps import CurrentAdmin, CurrentStaff, Limit, Offset, SessionDep
from cloud_api.models.audit import AuditEntry, AuditEntryPublic
from cloud_api.models.monitoring import Alarm
from cloud_api.models.record import RecordStatus
from cloud_api.services import staff as staff_service
from cloud_api.web.notices import Notices, dropoff_notices
from cloud_api.web.records import RecordWithHandovers, list_records

router = APIRouter(prefix="/api/v1/dashboard", tags=["dashboard"])
SearchText = Annotated[
    str | None,
    Query(
        max_length=64,
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="part of the application number, applicant name or matter",
    ),
]


@router.get("/records", response_model=list[RecordWithHandovers])
def dashboard_records(
    staff: CurrentStaff,
    session: SessionDep,
    status: RecordStatus | None = None,
    q: SearchText = None,
    offset: Offset = 0,
    limit: Limit = 100,
):
    """Approval records, most recently changed first, each with its handovers (the roles
    that work on records: not a technician)."""
    staff_service.require_record_work(staff)
    search = q.strip() if q else None
    return list_records(session, status, search or None, offset, limit)


@router.get("/audit/latest", response_model=list[AuditEntryPublic])
def latest_audit_entries(
    admin: CurrentAdmin,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
):
    rows = session.scalars(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(limit))
    return [AuditEntryPublic.model_validate(r, from_attributes=True) for r in rows]


@router.get("/notices", response_model=Notices)
def notices(
    staff: CurrentStaff,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
):
    """Drop-offs deposited at a locker and waiting for staff (the longest waiting first), and
    how many wait in all."""
    return dropoff_notices(session, limit)


class AlarmSummary(SQLModel):
    open: int  # alarms not cleared yet, at every locker
    lockers: dict[str, int]  # locker id -> its open alarms (lockers with none are left out)


@router.get("/alarm-summary", response_model=AlarmSummary)
def alarm_summary(staff: CurrentStaff, session: SessionDep):
    rows = session.execute(
        select(Alarm.locker_id, func.count())
        .where(Alarm.cleared_at.is_(None))
        .group_by(Alarm.locker_id)
    ).all()
    lockers = {locker_id: count for locker_id, count in rows}
    return AlarmSummary(open=sum(lockers.values()), lockers=lockers)
