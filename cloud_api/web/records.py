"""Approval records as staff see them on the dashboard: each with its handovers.

The integrators' record endpoints need ``records:write``, which staff do not hold, and they
show one record without its handovers. This read-only view exists for the dashboard: the
records list (filter by status or a search text) and, per record, every handover (newest
first), built with the same ``handovers.public`` the other endpoints use.
"""

from collections import defaultdict

from sqlalchemy import or_, select
from sqlmodel import Session

from cloud_api.models.handover import Handover, HandoverPublic
from cloud_api.models.record import ApprovalRecord, RecordPublic, RecordStatus
from cloud_api.services import handovers


class RecordWithHandovers(RecordPublic):
    handovers: list[HandoverPublic]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_records(
    session: Session,
    status: RecordStatus | None,
    search: str | None,
    offset: int,
    limit: int,
) -> list[RecordWithHandovers]:
    query = select(ApprovalRecord).order_by(ApprovalRecord.updated_at.desc(), ApprovalRecord.id)
    if status is not None:
        query = query.where(ApprovalRecord.status == status.value)
    if search:
        pattern = f"%{_escape_like(search)}%"
        query = query.where(
            or_(
                ApprovalRecord.application_number.ilike(pattern, escape="\\"),
                ApprovalRecord.applicant_name.ilike(pattern, escape="\\"),
                ApprovalRecord.matter_name.ilike(pattern, escape="\\"),
            )
        )
    records = list(session.scalars(query.offset(offset).limit(limit)))
    by_record: dict[int, list[Handover]] = defaultdict(list)
    if records:
        rows = session.scalars(
            select(Handover)
            .where(Handover.record_id.in_([r.id for r in records]))
            .order_by(Handover.id.desc())
        )
        for handover in rows:
            by_record[handover.record_id].append(handover)
    return [
        RecordWithHandovers(
            **RecordPublic.model_validate(record, from_attributes=True).model_dump(),
            handovers=[handovers.public(session, h) for h in by_record[record.id]],
        )
        for record in records
    ]
