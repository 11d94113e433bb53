"""A new opening code for an applicant who lost theirs (docs/codes.md "Lost codes").

Two ways in:

- **The kiosk.** The applicant types the application number and the last 4 digits of the
  mobile; the cabinet forwards them as a ``code_reissue_requested`` event (the digits as a
  digest keyed with that locker's key, xinbao/lost_code.py) and answers the same whatever
  happens next, so the kiosk tells nobody whether a record exists or matches. Here the request
  issues a new code only for a handover of that record whose code is out **at the locker the
  event came from**: a cabinet, hostile or not, reaches nothing elsewhere.
- **The dashboard.** Staff who do the daily work at the handover's site resend the code of a
  record whose code is out (the applicant on the phone).

Either way the old code is revoked and the new one goes by SMS to the record's mobile
(``handovers.reissue_code``: ``code.revoked``, ``code.issued``) and ``code.reissued`` is
audited with ``via``. The caller tells the locker (a reservation sync after the commit).

Kiosk requests are limited per locker (an hour) and per record (a day); every request the
limits count is a ``code_reissue`` row, so a locker writes at most its hourly limit of rows
and audit lines. Requests over a limit write one row and one ``code.reissue_limited`` line
per window, whose ``refused`` counts the rest: a flood is counted, not written row by row.
"""

import math
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlmodel import Session

from cloud_api.errors import Conflict, TooManyRequests
from cloud_api.models.code_reissue import (
    COUNTED_FOR_RECORD,
    LIMITED,
    CodeReissue,
    ReissueOutcome,
    ReissueVia,
)
from cloud_api.models.handover import Handover, HandoverKind, HandoverState
from cloud_api.models.record import ApprovalRecord
from cloud_api.models.staff import Staff
from cloud_api.services import audit, records
from cloud_api.services import staff as staff_service
from cloud_api.services.handovers import (
    HandoverPolicy,
    active_for_record,
    code_is_out,
    reissue_code,
)
from xinbao.codes import derive_locker_key
from xinbao.lockout import mobile_last_digits
from xinbao.lost_code import digest_matches

_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)

NO_LIVE_HANDOVER = (
    "该审批件目前没有可用的开箱码（未预约投件，或证照未放入/已取走）",
    "This record has no code in use now (no drop-off reserved, or no licence waiting).",
)


def live_handovers(
    session: Session, policy: HandoverPolicy, record: ApprovalRecord, now: datetime
) -> list[Handover]:
    """The record's handovers whose code the applicant holds and could still use: a drop-off
    reserved and not expired, a pickup deposited (or overdue, when its code keeps working).
    Locked until the transaction ends, so a resend and a kiosk request do not interleave."""
    live = []
    for handover in active_for_record(session, record.id):
        if not code_is_out(handover) or handover.code_sent_at is None:
            continue
        if handover.kind == HandoverKind.dropoff and handover.expires_at <= now:
            continue
        overdue = handover.state == HandoverState.overdue
        if overdue and not policy.codes.overdue_code_keeps_working:
            continue
        live.append(handover)
    return live


def _reissue(
    session: Session,
    policy: HandoverPolicy,
    handover: Handover,
    record: ApprovalRecord,
    actor: str,
    via: ReissueVia,
    now: datetime,
    event_id: str | None = None,
) -> None:
    """A new code for ``handover`` (the old one stops working), audited and counted in the
    reissue table (``event_id``: the kiosk request it answers)."""
    old = handover.code_counter
    reason = f"reissued via {via.value}"
    reissue_code(session, policy, handover, record, actor, reason, now, says_new=True)
    audit.append(
        session,
        actor,
        "code.reissued",
        f"handover:{handover.id}",
        {
            "handover_id": handover.id,
            "record_id": record.id,
            "via": via.value,
            "application_no": record.application_number,
            "locker_id": handover.locker_id,
            "kind": handover.kind,
            "old_counter": old,
            "counter": handover.code_counter,
        },
    )
    session.add(
        CodeReissue(
            at=now,
            via=via.value,
            locker_id=handover.locker_id,
            record_id=record.id,
            handover_id=handover.id,
            outcome=ReissueOutcome.reissued.value,
            actor=actor,
            event_id=event_id,
        )
    )


# --- the kiosk ------------------------------------------------------------------------------


def _counted(session: Session, *where) -> int:
    return session.scalar(select(func.count(CodeReissue.id)).where(*where)) or 0


def _limited(
    session: Session,
    outcome: ReissueOutcome,
    window: timedelta,
    limit: int,
    base: dict,
    now: datetime,
    **found,
) -> None:
    """A request over a limit: counted into the window's row; the first one of a window
    writes the row and one audit line."""
    scope = found or {"locker_id": base["locker_id"]}
    current = session.scalar(
        select(CodeReissue.id)
        .where(
            CodeReissue.via == ReissueVia.kiosk.value,
            CodeReissue.outcome == outcome.value,
            CodeReissue.at > now - window,
            *(getattr(CodeReissue, k) == v for k, v in scope.items()),
        )
        .order_by(CodeReissue.id.desc())
        .limit(1)
    )
    if current is not None:
        session.execute(
            update(CodeReissue)
            .where(CodeReissue.id == current)
            .values(refused=CodeReissue.refused + 1)
        )
        return
    session.add(CodeReissue(at=now, outcome=outcome.value, refused=1, **base, **found))
    audit.append(
        session,
        base["actor"],
        "code.reissue_limited",
        f"locker:{base['locker_id']}",
        {
            "via": ReissueVia.kiosk.value,
            "scope": "record" if found else "locker",
            "limit": limit,
            "window_s": int(window.total_seconds()),
            "locker_id": base["locker_id"],
            **found,
        },
    )


def _declined(
    session: Session,
    outcome: ReissueOutcome,
    base: dict,
    application_number: str,
    now: datetime,
    record: ApprovalRecord | None = None,
) -> ReissueOutcome:
    record_id = record.id if record is not None else None
    session.add(CodeReissue(at=now, outcome=outcome.value, record_id=record_id, **base))
    audit.append(
        session,
        base["actor"],
        "code.reissue_declined",
        f"locker:{base['locker_id']}",
        {
            "via": ReissueVia.kiosk.value,
            "reason": outcome.value,
            "locker_id": base["locker_id"],
            "application_no": application_number,
            "record_id": record_id,
            "event_id": base["event_id"],
        },
    )
    return outcome


def request_at_kiosk(
    session: Session,
    policy: HandoverPolicy,
    locker_id: str,
    application_number: str,
    mobile_digest: str,
    now: datetime,
    typed_at: datetime,
    event_id: str | None = None,
) -> tuple[ReissueOutcome, list[Handover]]:
    """What a lost-code request from the kiosk of ``locker_id`` does, inside the caller's
    transaction (not committed): the outcome, and the handovers given a new code (the
    caller syncs them to the locker after the commit). ``now`` is the cloud's clock (the
    limits count by it, never by a time the cabinet wrote); ``typed_at`` the event's."""
    rules = policy.lost_codes
    base = {
        "via": ReissueVia.kiosk.value,
        "locker_id": locker_id,
        "actor": f"locker:{locker_id}",
        "event_id": event_id,
    }
    admitted = _counted(
        session,
        CodeReissue.via == ReissueVia.kiosk.value,
        CodeReissue.locker_id == locker_id,
        CodeReissue.outcome.not_in(LIMITED),
        CodeReissue.at > now - _HOUR,
    )
    if admitted >= rules.per_locker_per_hour:
        limit = rules.per_locker_per_hour
        _limited(session, ReissueOutcome.limited_locker, _HOUR, limit, base, now)
        return ReissueOutcome.limited_locker, []
    if (now - typed_at).total_seconds() > rules.max_age_seconds:
        return _declined(session, ReissueOutcome.stale, base, application_number, now), []

    record = session.scalar(
        select(ApprovalRecord)
        .where(ApprovalRecord.application_number == application_number)
        .with_for_update()
    )
    if record is None:
        outcome = ReissueOutcome.unknown_record
        return _declined(session, outcome, base, application_number, now), []
    live = live_handovers(session, policy, record, now)
    here = [h for h in live if h.locker_id == locker_id]
    if not here:
        # A code out at another locker stays out of this cabinet's reach.
        outcome = ReissueOutcome.not_at_this_locker if live else ReissueOutcome.no_live_handover
        return _declined(session, outcome, base, application_number, now, record), []

    asked = _counted(
        session,
        CodeReissue.via == ReissueVia.kiosk.value,
        CodeReissue.record_id == record.id,
        CodeReissue.outcome.in_(COUNTED_FOR_RECORD),
        CodeReissue.at > now - _DAY,
    )
    if asked >= rules.per_record_per_day:
        limit = rules.per_record_per_day
        _limited(
            session, ReissueOutcome.limited_record, _DAY, limit, base, now, record_id=record.id
        )
        return ReissueOutcome.limited_record, []

    key = derive_locker_key(policy.codes.master_secret, locker_id)
    last = mobile_last_digits(record.mobile)
    if not digest_matches(key, record.application_number, last, mobile_digest):
        outcome = ReissueOutcome.mobile_mismatch
        return _declined(session, outcome, base, application_number, now, record), []

    for handover in here:
        _reissue(session, policy, handover, record, base["actor"], ReissueVia.kiosk, now, event_id)
    return ReissueOutcome.reissued, here


# --- the dashboard --------------------------------------------------------------------------


def masked_mobile(mobile: str) -> str:
    """The number as staff may read it out to the caller: ``+86138****8000``."""
    return mobile[:-8] + "****" + mobile[-4:] if len(mobile) > 8 else "****" + mobile[-4:]


def resend_by_staff(
    session: Session,
    policy: HandoverPolicy,
    application_number: str,
    staff: Staff,
    now: datetime,
) -> tuple[ApprovalRecord, list[Handover]]:
    """Staff resend a record's code (a new one; the old one stops working); commits. 404 for
    an unknown record, 409 when no code of it is out, 403 outside the member's role or site,
    429 when a code went out less than ``resend_min_interval`` ago (a double click)."""
    staff_service.require_daily_work(staff, session, None)
    record = records.by_number(session, application_number, lock=True)
    live = live_handovers(session, policy, record, now)
    if not live:
        error = Conflict(
            f"record {record.application_number} has no code out: no drop-off is reserved, "
            "and no licence waits in a locker"
        )
        zh, en = NO_LIVE_HANDOVER
        error.extra = {"reason": "no_live_handover", "message_zh": zh, "message_en": en}
        raise error
    for handover in live:
        staff_service.require_daily_work(staff, session, handover.locker_id)
        sent = handover.code_sent_at
        if sent is not None and now - sent < policy.resend_min_interval:
            ago = int((now - sent).total_seconds())
            wait = max(1, math.ceil((policy.resend_min_interval - (now - sent)).total_seconds()))
            error = TooManyRequests(
                f"a code for {record.application_number} went out {ago} s ago: wait {wait} s "
                "before sending another",
                retry_after=wait,
            )
            error.extra = {
                "reason": "just_sent",
                "message_zh": f"开箱码刚刚发送，请{wait}秒后再试",
                "message_en": f"A code was just sent: try again in {wait} s.",
            }
            raise error
    actor = f"staff:{staff.username}"
    for handover in live:
        _reissue(session, policy, handover, record, actor, ReissueVia.dashboard, now)
    session.commit()
    return record, live
