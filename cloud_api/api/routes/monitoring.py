"""What the lockers report, for the staff dashboard: alarms and ingested events."""

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from cloud_api.api.deps import CurrentStaff, DbId, Limit, LockerIdPath, NowDep, Offset, SessionDep
from cloud_api.models.common import LockerId
from cloud_api.models.monitoring import AlarmPublic, LockerEventPublic, LockerEventRecord
from cloud_api.services import alarms, lockers

router = APIRouter(prefix="/api/v1", tags=["monitoring"])


@router.get("/alarms", response_model=list[AlarmPublic])
def list_alarms(
    staff: CurrentStaff,
    session: SessionDep,
    open: bool = False,
    locker_id: Annotated[LockerId | None, Query()] = None,
    offset: Offset = 0,
    limit: Limit = 100,
):
    """Newest first; ``open=true`` lists only alarms not cleared yet (door left open, door
    forced, door jammed, board unreachable, locker off line)."""
    return alarms.list_alarms(
        session, open_only=open, locker_id=locker_id, offset=offset, limit=limit
    )


@router.post("/alarms/{alarm_id}/ack", response_model=AlarmPublic)
def acknowledge_alarm(alarm_id: DbId, staff: CurrentStaff, session: SessionDep, now: NowDep):
    """Staff have dealt with it: the alarm is cleared and the acknowledgement audited."""
    return alarms.acknowledge(session, alarm_id, f"staff:{staff.username}", now)


@router.get("/lockers/{locker_id}/events", response_model=list[LockerEventPublic])
def locker_events(
    locker_id: LockerIdPath,
    staff: CurrentStaff,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_seq: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
):
    """The events this locker sent, newest (highest seq) first."""
    lockers.get_locker(session, locker_id)
    query = select(LockerEventRecord).where(LockerEventRecord.locker_id == locker_id)
    if before_seq is not None:
        query = query.where(LockerEventRecord.seq < before_seq)
    rows = session.scalars(query.order_by(LockerEventRecord.seq.desc()).limit(limit))
    return [LockerEventPublic.model_validate(r, from_attributes=True) for r in rows]
