"""Approval records from the approval system: create, update, move through their states."""

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session

from cloud_api.errors import Conflict, IllegalTransition, InputError, NotFound
from cloud_api.models.handover import ACTIVE_STATES, Handover
from cloud_api.models.record import ApprovalRecord, RecordCreate, RecordStatus, RecordUpdate
from cloud_api.services import audit
from cloud_api.services.transitions import check_record, check_record_by_integrator
from cloud_api.sms.errors import SmsInputError
from cloud_api.sms.outbox import normalise_number

#: States a record may be created in (the approval system may register it after pre-review).
INITIAL_STATES = frozenset({RecordStatus.submitted, RecordStatus.prereview_passed})


def normalised_mobile(raw: str) -> str:
    """E.164, as records store it (InputError otherwise)."""
    try:
        return normalise_number(raw)
    except SmsInputError as err:
        raise InputError(str(err)) from None


def _not_found(application_number: str) -> NotFound:
    return NotFound(f"no approval record {application_number!r}")


def by_number(
    session: Session, application_number: str, *, lock: bool = False, owner: str | None = None
) -> ApprovalRecord:
    """The record; with ``owner``, only if that credential created it. Another integrator's
    record is answered exactly as a missing one, so its existence is not revealed."""
    query = select(ApprovalRecord).where(ApprovalRecord.application_number == application_number)
    if owner is not None:
        query = query.where(ApprovalRecord.created_by == owner)
    if lock:
        query = query.with_for_update()
    record = session.scalar(query)
    if record is None:
        raise _not_found(application_number)
    return record


def _repeat(
    existing: ApprovalRecord, body: RecordCreate, mobile: str, actor: str
) -> ApprovalRecord:
    """An identical repeat of a create is answered with the record; a different one refused.
    Another integrator's record is never answered with: only its number is known taken."""
    if existing.created_by != actor and actor.startswith("api_key:"):
        raise Conflict(
            f"application number {body.application_number} is taken by a record this key did "
            "not create"
        )
    same = (existing.applicant_name, existing.mobile, existing.matter_name) == (
        body.applicant_name,
        mobile,
        body.matter_name,
    )
    if not same:
        raise Conflict(
            f"record {body.application_number} exists with other details: "
            f"use PUT /api/v1/records/{body.application_number} to change it"
        )
    return existing


def add(session: Session, body: RecordCreate, actor: str) -> tuple[ApprovalRecord, bool]:
    """``create`` without the commit, for callers that commit more in the same transaction
    (an idempotent create stores its answer with it)."""
    if body.status not in INITIAL_STATES:
        raise InputError("a new record starts as 'submitted' or 'prereview_passed'")
    mobile = normalised_mobile(body.mobile)
    query = select(ApprovalRecord).where(
        ApprovalRecord.application_number == body.application_number
    )
    existing = session.scalar(query)
    if existing is not None:
        return _repeat(existing, body, mobile, actor), False
    record = _new_record(body, mobile, actor, body.status)
    try:
        # A savepoint, so losing the race below undoes only this insert, not the caller's
        # earlier work in the transaction.
        with session.begin_nested():
            session.add(record)
    except IntegrityError:
        # A concurrent create of the same number committed first; answer as for a repeat.
        return _repeat(session.scalar(query), body, mobile, actor), False
    _audit_created(session, record, actor)
    return record, True


def _new_record(
    body: RecordCreate, mobile: str, actor: str, status: RecordStatus
) -> ApprovalRecord:
    return ApprovalRecord(
        application_number=body.application_number,
        applicant_name=body.applicant_name,
        mobile=mobile,
        matter_name=body.matter_name,
        status=status.value,
        created_by=actor,
    )


def _audit_created(
    session: Session, record: ApprovalRecord, actor: str, detail: dict | None = None
) -> None:
    audit.append(
        session,
        actor,
        "record.created",
        f"record:{record.application_number}",
        {"status": record.status} | (detail or {}),
    )


def add_approved(
    session: Session, body: RecordCreate, mobile: str, actor: str, detail: dict
) -> ApprovalRecord:
    """A new record for a licence already issued (a staff import), created ``approved``, in
    the caller's transaction. A concurrent create of the same number fails the caller's
    whole transaction (IntegrityError, 409): it is run again and finds the record."""
    record = _new_record(body, mobile, actor, RecordStatus.approved)
    session.add(record)
    session.flush()
    _audit_created(session, record, actor, detail)
    return record


def create(session: Session, body: RecordCreate, actor: str) -> tuple[ApprovalRecord, bool]:
    """The record and whether it was created; an identical repeat returns the existing one."""
    record, created = add(session, body, actor)
    session.commit()
    return record, created


def apply_update(
    session: Session,
    application_number: str,
    body: RecordUpdate,
    actor: str,
    now: datetime,
    owner: str | None = None,
) -> tuple[ApprovalRecord, bool, set[str]]:
    """Create or update a record in the caller's transaction: the record, whether it was
    created, and the names of the fields that changed. With ``owner``, another credential's
    record is answered as missing (it cannot be created either: the number is taken)."""
    mobile = normalised_mobile(body.mobile)
    existing = session.scalar(
        select(ApprovalRecord)
        .where(ApprovalRecord.application_number == application_number)
        .with_for_update()
    )
    if existing is None:
        record, created = add(
            session,
            RecordCreate(
                application_number=application_number,
                applicant_name=body.applicant_name,
                mobile=mobile,
                matter_name=body.matter_name,
            ),
            actor,
        )
        return record, created, set()
    if owner is not None and existing.created_by != owner:
        raise _not_found(application_number)
    changes = {
        name: value
        for name, value in (
            ("applicant_name", body.applicant_name),
            ("mobile", mobile),
            ("matter_name", body.matter_name),
        )
        if getattr(existing, name) != value
    }
    if changes:
        for name, value in changes.items():
            setattr(existing, name, value)
        existing.updated_at = now
        audit.append(
            session,
            actor,
            "record.updated",
            f"record:{application_number}",
            {"fields": sorted(changes)},
        )
    return existing, False, set(changes)


def move(
    session: Session,
    record: ApprovalRecord,
    wanted: RecordStatus,
    actor: str,
    now: datetime,
    *,
    by_integrator: bool = False,
    reason: str | None = None,
) -> None:
    """Change the record's status in the caller's transaction (conditional on the old one)."""
    current = record.status
    if by_integrator:
        check_record_by_integrator(current, wanted)
    else:
        check_record(current, wanted)
    moved = session.execute(
        update(ApprovalRecord)
        .where(ApprovalRecord.id == record.id, ApprovalRecord.status == current)
        .values(status=wanted.value, updated_at=now)
    ).rowcount
    if moved != 1:
        session.rollback()
        fresh = session.get(ApprovalRecord, record.id, populate_existing=True)
        raise IllegalTransition("approval record", fresh.status, wanted.value)
    set_committed_value(record, "status", wanted.value)
    set_committed_value(record, "updated_at", now)
    detail = {"from": current, "to": wanted.value} | ({"reason": reason} if reason else {})
    audit.append(session, actor, "record.status", f"record:{record.application_number}", detail)


def transition_by_integrator(
    session: Session,
    application_number: str,
    wanted: RecordStatus,
    actor: str,
    now: datetime,
    reason: str | None = None,
    owner: str | None = None,
) -> ApprovalRecord:
    record = by_number(session, application_number, lock=True, owner=owner)
    if wanted in (RecordStatus.rejected, RecordStatus.withdrawn):
        active = session.scalar(
            select(Handover.id).where(
                Handover.record_id == record.id,
                Handover.state.in_([s.value for s in ACTIVE_STATES]),
            )
        )
        if active is not None:
            raise Conflict(
                f"record {application_number} has an active handover ({active}): cancel it "
                f"before moving the record to '{wanted.value}'"
            )
    move(session, record, wanted, actor, now, by_integrator=True, reason=reason)
    session.commit()
    return record
