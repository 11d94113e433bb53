"""Notices for staff: a drop-off was deposited and waits to be collected.

A notice is the applied ``deposited`` event of a drop-off (cloud_api.mqtt.effects applies it
and logs a line for the console): the event row is created when the locker reports the
documents in, so the notice needs no table of its own, and its id (the event row's) gives the
dashboard a cursor: it asks for notices after the last one it showed, counts those whose
drop-off still waits, and shows them until staff dismiss them.
"""

from datetime import datetime

from sqlalchemy import func, select
from sqlmodel import Session, SQLModel

from cloud_api.models.handover import Handover, HandoverKind, HandoverState
from cloud_api.models.monitoring import LockerEventRecord
from cloud_api.models.record import ApprovalRecord


class DropoffNotice(SQLModel):
    id: int  # the event row: notices come in this order
    locker_id: str
    compartment: int | None
    handover_id: int
    application_number: str
    applicant_name: str
    deposited_at: datetime
    state: str  # the drop-off now: "deposited" while it waits for staff


class Notices(SQLModel):
    waiting: int  # drop-offs deposited and not collected yet, all of them
    latest: int  # the newest notice id there is (the cursor for "dismiss all")
    notices: list[DropoffNotice]  # after the cursor asked for, oldest first


def dropoff_notices(session: Session, after: int, limit: int) -> Notices:
    rows = session.scalars(
        select(LockerEventRecord)
        .where(
            LockerEventRecord.id > after,
            LockerEventRecord.type == "deposited",
            LockerEventRecord.outcome == "applied",
        )
        .order_by(LockerEventRecord.id)
        .limit(limit)
    )
    notices = []
    for row in rows:
        handover = session.get(Handover, (row.data or {}).get("handover_id"))
        if handover is None or handover.kind != HandoverKind.dropoff:
            continue  # a licence loaded for pickup: no news for staff
        record = session.get(ApprovalRecord, handover.record_id)
        notices.append(
            DropoffNotice(
                id=row.id,
                locker_id=row.locker_id,
                compartment=row.compartment,
                handover_id=handover.id,
                application_number=record.application_number,
                applicant_name=record.applicant_name,
                deposited_at=row.ts,
                state=handover.state,
            )
        )
    waiting = session.scalar(
        select(func.count())
        .select_from(Handover)
        .where(
            Handover.kind == HandoverKind.dropoff.value,
            Handover.state == HandoverState.deposited.value,
        )
    )
    latest = session.scalar(
        select(func.max(LockerEventRecord.id)).where(
            LockerEventRecord.type == "deposited", LockerEventRecord.outcome == "applied"
        )
    )
    return Notices(waiting=waiting or 0, latest=latest or 0, notices=notices)
