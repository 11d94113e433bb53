"""Approval records as staff see them on the dashboard: each with its handovers.

The integrators' record endpoints need ``records:write``, which staff do not hold, and they
show one record without its handovers. These read-only views exist for the dashboard: the
records list (filter by status or a search text), a page of search results with the total
(number, name, the mobile's last digits, status), and one record with its handovers (newest
first, built with the same ``handovers.public`` the other endpoints use), its audit trail and
the moves staff may make (the integrators' rule, ``transitions.record_moves_by_api``).
"""

from collections import defaultdict

from sqlalchemy import Select, func, or_, select
from sqlmodel import Session, SQLModel

from cloud_api.models.audit import AuditEntry, AuditEntryPublic
from cloud_api.models.handover import Handover, HandoverPublic
from cloud_api.models.record import ApprovalRecord, RecordPublic, RecordStatus
from cloud_api.services import handovers, records
from cloud_api.services.transitions import record_moves_by_api

#: Audit entries shown on a record's page (newest first).
RECORD_AUDIT_LIMIT = 200


class RecordWithHandovers(RecordPublic):
    handovers: list[HandoverPublic]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filtered(
    query: Select,
    status: RecordStatus | None,
    search: str | None,
    mobile_tail: str | None = None,
) -> Select:
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
    if mobile_tail:
        # Digits only (the route's pattern): nothing to escape.
        query = query.where(ApprovalRecord.mobile.like(f"%{mobile_tail}"))
    return query


def list_records(
    session: Session,
    status: RecordStatus | None,
    search: str | None,
    offset: int,
    limit: int,
) -> list[RecordWithHandovers]:
    query = select(ApprovalRecord).order_by(ApprovalRecord.updated_at.desc(), ApprovalRecord.id)
    query = _filtered(query, status, search)
    return _with_handovers(session, list(session.scalars(query.offset(offset).limit(limit))))


def _with_handovers(session: Session, found: list[ApprovalRecord]) -> list[RecordWithHandovers]:
    by_record: dict[int, list[Handover]] = defaultdict(list)
    if found:
        rows = session.scalars(
            select(Handover)
            .where(Handover.record_id.in_([r.id for r in found]))
            .order_by(Handover.id.desc())
        )
        for handover in rows:
            by_record[handover.record_id].append(handover)
    return [
        RecordWithHandovers(
            **RecordPublic.model_validate(record, from_attributes=True).model_dump(),
            handovers=[handovers.public(session, h) for h in by_record[record.id]],
        )
        for record in found
    ]


class RecordPage(SQLModel):
    total: int  # records matching, over every page
    offset: int
    limit: int
    items: list[RecordWithHandovers]


def search(
    session: Session,
    status: RecordStatus | None,
    text: str | None,
    mobile_tail: str | None,
    offset: int,
    limit: int,
) -> RecordPage:
    """Records matching every filter given, most recently changed first."""
    found = _filtered(select(ApprovalRecord), status, text, mobile_tail)
    total = session.scalar(select(func.count()).select_from(found.subquery()))
    rows = session.scalars(
        found.order_by(ApprovalRecord.updated_at.desc(), ApprovalRecord.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return RecordPage(
        total=total or 0,
        offset=offset,
        limit=limit,
        items=_with_handovers(session, list(rows)),
    )


class RecordDetail(SQLModel):
    record: RecordPublic
    handovers: list[HandoverPublic]  # newest first
    audit: list[AuditEntryPublic]  # about the record and its handovers, newest first
    moves: list[str]  # the states staff may move it to now (as the API allows)


def detail(session: Session, application_number: str) -> RecordDetail:
    record = records.by_number(session, application_number)
    found = list(
        session.scalars(
            select(Handover).where(Handover.record_id == record.id).order_by(Handover.id.desc())
        )
    )
    subjects = [f"record:{record.application_number}"] + [f"handover:{h.id}" for h in found]
    entries = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.subject.in_(subjects))
        .order_by(AuditEntry.seq.desc())
        .limit(RECORD_AUDIT_LIMIT)
    )
    return RecordDetail(
        record=RecordPublic.model_validate(record, from_attributes=True),
        handovers=[handovers.public(session, h) for h in found],
        audit=[AuditEntryPublic.model_validate(e, from_attributes=True) for e in entries],
        moves=record_moves_by_api(record.status),
    )
