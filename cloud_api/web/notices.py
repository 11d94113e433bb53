"""Notices for staff: drop-offs deposited at a locker and waiting to be collected.

A drop-off becomes ``deposited`` when the locker's ``deposited`` event is applied
(cloud_api.mqtt.effects, which also logs a line for the console), so the notice needs no
table of its own: it is the drop-off itself, for as long as it waits. The list is small (a
drop-off waits hours, not months) and read through the handover state index, so every open
dashboard can ask every few seconds. Which of them a staff member has already seen and
dismissed is the browser's to remember (by handover id).
"""

from datetime import datetime

from sqlalchemy import func, select
from sqlmodel import Session, SQLModel

from cloud_api.models.handover import Handover, HandoverKind, HandoverState
from cloud_api.models.locker import Compartment
from cloud_api.models.record import ApprovalRecord


class DropoffNotice(SQLModel):
    handover_id: int
    locker_id: str
    compartment: int
    application_number: str
    applicant_name: str
    deposited_at: datetime | None


class Notices(SQLModel):
    waiting: int  # drop-offs deposited and not collected yet, all of them
    dropoffs: list[DropoffNotice]  # the longest waiting first, at most ``limit``


def _waiting():
    return (
        Handover.kind == HandoverKind.dropoff.value,
        Handover.state == HandoverState.deposited.value,
    )


def dropoff_notices(session: Session, limit: int) -> Notices:
    rows = session.execute(
        select(Handover, ApprovalRecord, Compartment)
        .join(ApprovalRecord, ApprovalRecord.id == Handover.record_id)
        .join(Compartment, Compartment.id == Handover.compartment_id)
        .where(*_waiting())
        .order_by(Handover.deposited_at, Handover.id)
        .limit(limit)
    )
    dropoffs = [
        DropoffNotice(
            handover_id=handover.id,
            locker_id=handover.locker_id,
            compartment=compartment.number,
            application_number=record.application_number,
            applicant_name=record.applicant_name,
            deposited_at=handover.deposited_at,
        )
        for handover, record, compartment in rows
    ]
    waiting = session.scalar(select(func.count()).select_from(Handover).where(*_waiting()))
    return Notices(waiting=waiting or 0, dropoffs=dropoffs)
