"""Handovers: drop-off reservations, pickup loads, and what lockers and staff report.

Each public function is one transaction: it changes state with conditional UPDATEs, appends
the audit entries, queues the SMS in the outbox, and commits all of it together.
"""

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session

from cloud_api.core.rating_links import RatingLinks
from cloud_api.errors import Conflict, IllegalTransition, InputError, NotFound, TooManyRequests
from cloud_api.models.handover import (
    ACTIVE_STATES,
    DropoffRequest,
    Handover,
    HandoverKind,
    HandoverPublic,
    HandoverState,
    LoadRequest,
)
from cloud_api.models.locker import Compartment, CompartmentState, Locker
from cloud_api.models.record import ApprovalRecord, RecordStatus, RecordUpdate
from cloud_api.services import audit, lockers, records
from cloud_api.services.codes import CodePolicy, LostCodePolicy, allocate_code
from cloud_api.services.transitions import RECORD_TRANSITIONS, check_handover
from cloud_api.sms.errors import SmsInputError
from cloud_api.sms.outbox import enqueue_sms
from cloud_api.sms.outbox import normalise_number as normalise_mobile
from xinbao.allocation import APPLICANT_MESSAGES

log = logging.getLogger(__name__)

_SMS_LOCKER_NAME = 30  # the SMS templates' limit for a locker name


@dataclass(frozen=True)
class HandoverPolicy:
    codes: CodePolicy
    dropoff_reservation: timedelta
    pickup_load: timedelta
    retention: timedelta
    resend_min_interval: timedelta
    resend_max: int
    service_phone: str
    rating_links: RatingLinks
    lost_codes: LostCodePolicy = LostCodePolicy()


def public(session: Session, handover: Handover) -> HandoverPublic:
    record = session.get(ApprovalRecord, handover.record_id)
    compartment = session.get(Compartment, handover.compartment_id)
    return HandoverPublic(
        **handover.model_dump(exclude={"code_digest"}),
        application_number=record.application_number,
        compartment_number=compartment.number,
    )


def get(session: Session, handover_id: int, owner: str | None = None) -> Handover:
    """The handover; with ``owner``, only if that credential created it or its record.
    Another integrator's handover is answered exactly as a missing one."""
    handover = session.get(Handover, handover_id)
    if handover is not None and owner is not None and handover.created_by != owner:
        record = session.get(ApprovalRecord, handover.record_id)
        if record.created_by != owner:
            handover = None
    if handover is None:
        raise NotFound(f"no handover {handover_id}")
    return handover


def _locker_name(locker: Locker) -> str:
    return locker.site[:_SMS_LOCKER_NAME]


def _queue_code_sms(
    session: Session, handover: Handover, record: ApprovalRecord, template: str, now: datetime
) -> None:
    locker = session.get(Locker, handover.locker_id)
    try:
        enqueue_sms(
            session,
            dedupe_key=f"handover:{handover.id}:{template}:c{handover.code_counter}",
            to_number=record.mobile,
            template=template,
            params={"locker_name": _locker_name(locker), "expires_at": handover.expires_at},
            locker_id=handover.locker_id,
            code_counter=handover.code_counter,
            handover_id=handover.id,
        )
    except SmsInputError as err:
        raise InputError(f"cannot send the code by SMS: {err}") from None
    handover.code_sent_at = now


def _no_active(session: Session, record: ApprovalRecord, kind: HandoverKind) -> None:
    active = session.scalar(
        select(Handover.id).where(
            Handover.record_id == record.id,
            Handover.kind == kind.value,
            Handover.state.in_([s.value for s in ACTIVE_STATES]),
        )
    )
    if active is not None:
        raise Conflict(
            f"record {record.application_number} already has an active {kind} "
            f"(handover {active}): cancel it first"
        )


def _new_handover(
    session: Session,
    kind: HandoverKind,
    record: ApprovalRecord,
    compartment: Compartment,
    expires_at: datetime,
    actor: str,
    now: datetime,
) -> Handover:
    handover = Handover(
        ref=secrets.token_urlsafe(16),
        kind=kind.value,
        state=HandoverState.reserved.value,
        record_id=record.id,
        locker_id=compartment.locker_id,
        compartment_id=compartment.id,
        expires_at=expires_at,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(handover)
    session.flush()
    compartment.handover_id = handover.id
    return handover


def request_dropoff(
    session: Session,
    policy: HandoverPolicy,
    body: DropoffRequest,
    actor: str,
    now: datetime,
    owner: str | None = None,
) -> Handover:
    handover = reserve_dropoff(session, policy, body, actor, now, owner)
    session.commit()
    return handover


def reserve_dropoff(
    session: Session,
    policy: HandoverPolicy,
    body: DropoffRequest,
    actor: str,
    now: datetime,
    owner: str | None = None,
) -> Handover:
    """``request_dropoff`` without the commit, for callers that commit more with it. With
    ``owner``, only for a record that credential created."""
    record = records.by_number(session, body.application_number, lock=True, owner=owner)
    if record.status != RecordStatus.prereview_passed:
        raise IllegalTransition(
            "approval record",
            record.status,
            RecordStatus.documents_in_locker.value,
            f"record {record.application_number} is '{record.status}': a drop-off needs "
            "'prereview_passed'",
        )
    _no_active(session, record, HandoverKind.dropoff)
    if body.locker_id is not None:
        lockers.get_locker(session, body.locker_id)
        compartment = lockers.claim_compartment(session, body.locker_id, body.size.value)
    else:
        compartment = _claim_nearest(session, body, now)
    handover = _new_handover(
        session,
        HandoverKind.dropoff,
        record,
        compartment,
        now + policy.dropoff_reservation,
        actor,
        now,
    )
    handover.code_counter, handover.code_digest = allocate_code(
        session, policy.codes, compartment.locker_id
    )
    _queue_code_sms(session, handover, record, "dropoff_code", now)
    audit.append(
        session,
        actor,
        "handover.reserved",
        f"handover:{handover.id}",
        {
            "kind": "dropoff",
            "record": record.application_number,
            "locker": compartment.locker_id,
            "compartment": compartment.number,
        },
    )
    audit.append(
        session,
        actor,
        "code.issued",
        f"handover:{handover.id}",
        {"counter": handover.code_counter, "locker": compartment.locker_id},
    )
    return handover


def _claim_nearest(session: Session, body: DropoffRequest, now: datetime) -> Compartment:
    nearby = lockers.nearest_with_space(
        session, body.latitude, body.longitude, body.size.value, lockers.NEAREST_CANDIDATES, now
    )
    for candidate in nearby:
        try:
            return lockers.claim_compartment(session, candidate.id, body.size.value)
        except lockers.NoFreeCompartment:
            continue
    error = lockers.NoFreeCompartment(
        f"no locker near ({body.latitude}, {body.longitude}) has a free compartment of size "
        f"{body.size.value}"
    )
    zh, en = APPLICANT_MESSAGES["no_free_compartment"]
    error.extra = {"message_zh": zh, "message_en": en}
    raise error


def start_load(
    session: Session, policy: HandoverPolicy, body: LoadRequest, actor: str, now: datetime
) -> Handover:
    """Staff begin loading a licence: a compartment is reserved and the pickup counter
    allocated now, so it can reach the locker before any outage (the SMS waits for the
    deposit)."""
    record = records.by_number(session, body.application_number, lock=True)
    if record.status != RecordStatus.approved:
        raise IllegalTransition(
            "approval record",
            record.status,
            RecordStatus.licence_in_locker.value,
            f"record {record.application_number} is '{record.status}': loading a licence "
            "needs 'approved'",
        )
    _no_active(session, record, HandoverKind.pickup)
    lockers.get_locker(session, body.locker_id)
    compartment = lockers.claim_compartment(session, body.locker_id, body.size.value)
    handover = _new_handover(
        session, HandoverKind.pickup, record, compartment, now + policy.pickup_load, actor, now
    )
    handover.code_counter, handover.code_digest = allocate_code(
        session, policy.codes, compartment.locker_id
    )
    audit.append(
        session,
        actor,
        "handover.reserved",
        f"handover:{handover.id}",
        {
            "kind": "pickup",
            "record": record.application_number,
            "locker": compartment.locker_id,
            "compartment": compartment.number,
        },
    )
    audit.append(
        session,
        actor,
        "code.issued",
        f"handover:{handover.id}",
        {"counter": handover.code_counter, "locker": compartment.locker_id},
    )
    session.commit()
    return handover


def _move(
    session: Session, handover: Handover, wanted: HandoverState, actor: str, now: datetime, **values
) -> None:
    current = handover.state
    check_handover(current, wanted)
    moved = session.execute(
        update(Handover)
        .where(Handover.id == handover.id, Handover.state == current)
        .values(state=wanted.value, updated_at=now, **values)
    ).rowcount
    if moved != 1:
        session.rollback()
        fresh = session.get(Handover, handover.id, populate_existing=True)
        raise IllegalTransition("handover", fresh.state, wanted.value)
    for name, value in {"state": wanted.value, "updated_at": now, **values}.items():
        set_committed_value(handover, name, value)
    audit.append(
        session,
        actor,
        "handover.state",
        f"handover:{handover.id}",
        {"from": current, "to": wanted.value, "kind": handover.kind},
    )


def _finish(
    session: Session, handover: Handover, wanted: HandoverState, actor: str, now: datetime
) -> None:
    _move(session, handover, wanted, actor, now, finished_at=now)
    lockers.release_compartment(session, handover.compartment_id, handover.id)


def report_deposited(
    session: Session, policy: HandoverPolicy, handover: Handover, actor: str, now: datetime
) -> None:
    """The locker saw the door close with the item inside."""
    record = session.get(ApprovalRecord, handover.record_id, with_for_update=True)
    values: dict = {"deposited_at": now}
    if handover.kind == HandoverKind.pickup:
        values["expires_at"] = now + policy.retention
    elif handover.code_redeemed_at is None:
        # Checked at the locker while off line: the code is spent all the same.
        values["code_redeemed_at"] = now
    # Ended in the cloud while the locker, off line, took the item in after all (effects.py):
    # the handover lives again, for staff to collect or the applicant to pick up.
    late = handover.state in (HandoverState.cancelled, HandoverState.expired)
    if late:
        values["finished_at"] = None
    _move(session, handover, HandoverState.deposited, actor, now, **values)
    session.execute(
        update(Compartment)
        .where(Compartment.id == handover.compartment_id)
        .values(state=CompartmentState.occupied.value)
    )
    wanted = (
        RecordStatus.documents_in_locker
        if handover.kind == HandoverKind.dropoff
        else RecordStatus.licence_in_locker
    )
    # A record that went its own way meanwhile (the documents came to a window, say) keeps
    # its status: the alarm and the audit line tell staff what is in the locker.
    if not late or wanted in RECORD_TRANSITIONS[RecordStatus(record.status)]:
        records.move(session, record, wanted, actor, now)
    if handover.kind == HandoverKind.pickup:
        _queue_code_sms(session, handover, record, "pickup_code", now)
    else:
        _queue_dropoff_receipt(session, handover, record, now)
    session.commit()


def _queue_dropoff_receipt(
    session: Session, handover: Handover, record: ApprovalRecord, now: datetime
) -> None:
    """The applicant's receipt: which locker and compartment took the documents, and when."""
    locker = session.get(Locker, handover.locker_id)
    compartment = session.get(Compartment, handover.compartment_id)
    try:
        enqueue_sms(
            session,
            dedupe_key=f"handover:{handover.id}:dropoff_receipt",
            to_number=record.mobile,
            template="dropoff_receipt",
            params={
                "locker_name": _locker_name(locker),
                "compartment": compartment.number if compartment else "?",
                "application_number": record.application_number,
                "deposited_at": now,
            },
            handover_id=handover.id,
        )
    except SmsInputError as err:  # the deposit stands; the receipt is a courtesy
        log.warning("no drop-off receipt for handover %s: %s", handover.id, err)


def report_collected(
    session: Session, policy: HandoverPolicy, handover: Handover, actor: str, now: datetime
) -> None:
    """The applicant took the licence out (pickup), reported by the locker."""
    if handover.kind != HandoverKind.pickup:
        raise Conflict(
            "a drop-off is collected by staff: POST /api/v1/staff/handovers/{id}/collect"
        )
    record = session.get(ApprovalRecord, handover.record_id, with_for_update=True)
    _finish(session, handover, HandoverState.collected, actor, now)
    records.move(session, record, RecordStatus.collected, actor, now)
    # The link is signed for this handover and expires rating_valid_days from now
    # (core/rating_links.py); the page behind it is web/rating_page.py.
    enqueue_sms(
        session,
        dedupe_key=f"handover:{handover.id}:receipt",
        to_number=record.mobile,
        template="receipt",
        params={"rating_url": policy.rating_links.link(handover.id, now)},
        handover_id=handover.id,
    )
    session.commit()


def staff_collect(session: Session, handover: Handover, actor: str, now: datetime) -> None:
    """Staff took the applicant's documents out of the locker."""
    if handover.kind != HandoverKind.dropoff:
        raise Conflict("only drop-offs are collected by staff; an overdue pickup is recovered")
    record = session.get(ApprovalRecord, handover.record_id, with_for_update=True)
    _finish(session, handover, HandoverState.collected, actor, now)
    records.move(session, record, RecordStatus.documents_received, actor, now)
    session.commit()


def staff_recover(session: Session, handover: Handover, actor: str, now: datetime) -> None:
    """Staff took an overdue licence back; the code dies with the handover."""
    record = session.get(ApprovalRecord, handover.record_id, with_for_update=True)
    _finish(session, handover, HandoverState.recovered, actor, now)
    if record.status == RecordStatus.licence_in_locker:
        records.move(session, record, RecordStatus.approved, actor, now)
    session.commit()


def cancel(session: Session, handover: Handover, actor: str, now: datetime) -> None:
    _finish(session, handover, HandoverState.cancelled, actor, now)
    audit.append(
        session,
        actor,
        "code.revoked",
        f"handover:{handover.id}",
        {"counter": handover.code_counter, "reason": "cancelled"},
    )
    session.commit()


def resend(
    session: Session, policy: HandoverPolicy, ref: str, mobile: str, now: datetime
) -> Handover:
    """A new code for the applicant; the old counter is revoked (its digest is replaced)."""
    handover = session.scalar(select(Handover).where(Handover.ref == ref).with_for_update())
    # The same answer for an unknown reference and a wrong number: no probing for numbers.
    not_found = NotFound("no handover with this reference and mobile number")
    if handover is None:
        raise not_found
    record = session.get(ApprovalRecord, handover.record_id)
    try:
        if normalise_mobile(mobile) != record.mobile:
            raise not_found
    except SmsInputError:
        raise not_found from None
    if not code_is_out(handover):
        raise Conflict(f"this {handover.kind} is '{handover.state}': there is no code to resend")
    if handover.resend_count >= policy.resend_max:
        raise TooManyRequests(
            "the code was resent too often: please call the service centre", retry_after=24 * 3600
        )
    if handover.code_sent_at and now - handover.code_sent_at < policy.resend_min_interval:
        wait = policy.resend_min_interval - (now - handover.code_sent_at)
        raise TooManyRequests(
            f"the code was just sent: wait {int(wait.total_seconds()) + 1} s before asking again",
            retry_after=int(wait.total_seconds()) + 1,
        )
    handover.resend_count += 1
    reissue_code(
        session, policy, handover, record, "applicant", "resend", now, resend=handover.resend_count
    )
    session.commit()
    return handover


def active_for_record(session: Session, record_id: int) -> list[Handover]:
    """The record's handovers in an active state, oldest first, locked until the transaction
    ends (a resend, a kiosk request and a new mobile number do not interleave)."""
    return list(
        session.scalars(
            select(Handover)
            .where(
                Handover.record_id == record_id,
                Handover.state.in_([s.value for s in ACTIVE_STATES]),
            )
            .order_by(Handover.id)
            .with_for_update()
        )
    )


def code_is_out(handover: Handover) -> bool:
    """The applicant holds a code for this handover that still opens something."""
    live = (handover.kind == HandoverKind.dropoff and handover.state == HandoverState.reserved) or (
        handover.kind == HandoverKind.pickup
        and handover.state in (HandoverState.deposited, HandoverState.overdue)
    )
    return live and handover.code_redeemed_at is None


def reissue_code(
    session: Session,
    policy: HandoverPolicy,
    handover: Handover,
    record: ApprovalRecord,
    actor: str,
    reason: str,
    now: datetime,
    *,
    says_new: bool = False,
    **detail,
) -> None:
    """A new counter replaces the old one (whose code stops working: its digest is gone) and
    the new code is queued by SMS to the record's mobile; both audited. ``says_new``: the
    SMS says the code replaces one that no longer works (a lost code, a staff resend)."""
    old = handover.code_counter
    handover.code_counter, handover.code_digest = allocate_code(
        session, policy.codes, handover.locker_id
    )
    handover.updated_at = now
    template = "dropoff_code" if handover.kind == HandoverKind.dropoff else "pickup_code"
    if says_new:
        template += "_new"
    _queue_code_sms(session, handover, record, template, now)
    audit.append(
        session,
        actor,
        "code.revoked",
        f"handover:{handover.id}",
        {"counter": old, "reason": reason},
    )
    audit.append(
        session,
        actor,
        "code.issued",
        f"handover:{handover.id}",
        {"counter": handover.code_counter, "locker": handover.locker_id} | detail,
    )


def update_record(
    session: Session,
    policy: HandoverPolicy,
    application_number: str,
    body: RecordUpdate,
    actor: str,
    now: datetime,
    owner: str | None = None,
) -> tuple[ApprovalRecord, bool, list[Handover]]:
    """Create or update a record (one transaction); the record, whether it was created, and
    the handovers whose code was replaced.

    A new mobile number means the code already sent went to a phone that is no longer the
    applicant's (a lost phone, a number typed wrong, someone else's): every code still out
    for the record is revoked and a new one goes to the new number."""
    record, created, changed = records.apply_update(
        session, application_number, body, actor, now, owner
    )
    reissued: list[Handover] = []
    if "mobile" in changed:
        for handover in active_for_record(session, record.id):
            # A pickup not yet deposited has sent no code: its SMS goes to the new number.
            if code_is_out(handover) and handover.code_sent_at is not None:
                reissue_code(session, policy, handover, record, actor, "mobile changed", now)
                reissued.append(handover)
    session.commit()
    return record, created, reissued


def list_in_states(
    session: Session, kind: HandoverKind, states: list[HandoverState], offset: int, limit: int
) -> list[Handover]:
    return list(
        session.scalars(
            select(Handover)
            .where(Handover.kind == kind.value, Handover.state.in_([s.value for s in states]))
            .order_by(Handover.id)
            .offset(offset)
            .limit(limit)
        )
    )
