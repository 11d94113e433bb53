"""Issuing and checking opening codes (docs/codes.md).

The cloud never stores a code: a handover holds the HOTP counter and a keyed digest of the
code. Checking a typed code is a digest lookup among the locker's live handovers, followed by a
constant-time comparison; redeeming is a conditional UPDATE, so of two concurrent checks of
the same code exactly one wins. Checks at one locker are serialised on its row (FOR UPDATE),
so the brute-force count and lockout hold under concurrency.

The brute-force guard is the state machine the cabinets run too (xinbao/lockout.py): failures
decay by time, an accepted code resets nothing, guesses during a lockout are counted (one
audit line per lockout window, not one per guess), and during a lockout a code is accepted
with the last 4 digits of the record's mobile.
"""

import hmac
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, select, update
from sqlmodel import Session

from cloud_api.errors import NotFound, TooManyRequests
from cloud_api.models.handover import ACTIVE_STATES, Handover, HandoverKind, HandoverState
from cloud_api.models.locker import Compartment, Locker
from cloud_api.models.record import ApprovalRecord
from cloud_api.services import audit
from xinbao import lockout as machine
from xinbao.codes import code_digest, code_for, derive_locker_key, is_well_formed
from xinbao.lockout import LockoutPolicy, LockoutState

# A digest collision among a locker's live codes is rare (1e-6 per pair with 8 digits and
# 100 live codes); more than this many in a row means something else is wrong.
_MAX_COLLISION_SKIPS = 50


@dataclass(frozen=True)
class CodePolicy:
    master_secret: bytes
    digits: int
    lockout_threshold: int = 5
    lockout_base_seconds: float = 30
    lockout_max_seconds: float = 3600
    overdue_code_keeps_working: bool = True
    lockout_forgive_seconds: float = LockoutPolicy.forgive_s
    lockout_level_decay_seconds: float = LockoutPolicy.level_decay_s

    @property
    def lockout(self) -> LockoutPolicy:
        return LockoutPolicy(
            threshold=self.lockout_threshold,
            base_s=self.lockout_base_seconds,
            max_s=self.lockout_max_seconds,
            forgive_s=self.lockout_forgive_seconds,
            level_decay_s=self.lockout_level_decay_seconds,
        )


@dataclass(frozen=True)
class LostCodePolicy:
    """Limits on new codes asked for at a kiosk (cloud_api/services/lost_codes.py)."""

    per_record_per_day: int = 3
    per_locker_per_hour: int = 10
    max_age_seconds: float = 900


def _live_filter(locker_id: str):
    return and_(
        Handover.locker_id == locker_id,
        Handover.state.in_([s.value for s in ACTIVE_STATES]),
        Handover.code_digest.is_not(None),
    )


def allocate_code(session: Session, policy: CodePolicy, locker_id: str) -> tuple[int, str]:
    """A fresh counter for ``locker_id`` and its code's digest, unique among live codes.

    The counter comes from an UPDATE ... RETURNING on the locker row, which serialises
    allocators per locker and never hands out a counter twice.
    """
    key = derive_locker_key(policy.master_secret, locker_id)
    for _ in range(_MAX_COLLISION_SKIPS):
        counter = (
            session.execute(
                update(Locker)
                .where(Locker.id == locker_id)
                .values(next_code_counter=Locker.next_code_counter + 1)
                .returning(Locker.next_code_counter)
            ).scalar_one()
            - 1
        )
        digest = code_digest(key, code_for(key, counter, policy.digits))
        clash = session.scalar(
            select(Handover.id).where(_live_filter(locker_id), Handover.code_digest == digest)
        )
        if clash is None:
            return counter, digest
        audit.append(
            session,
            "system",
            "code.counter_skipped",
            f"locker:{locker_id}",
            {"counter": counter, "reason": "code equals a live code"},
        )
    raise RuntimeError(f"could not find a unique code for locker {locker_id}")


@dataclass(frozen=True)
class CheckOutcome:
    accepted: bool
    handover: Handover | None = None
    compartment: Compartment | None = None
    attempts_left: int | None = None


def _state(locker: Locker) -> LockoutState:
    if locker.lockout_state is not None:
        try:
            return LockoutState.from_dict(json.loads(locker.lockout_state))
        except ValueError:
            return LockoutState()
    # A locker last checked before the shared machine: its old columns.
    until = locker.lockout_until.timestamp() if locker.lockout_until else 0.0
    return LockoutState(
        failures=float(locker.failed_code_attempts or 0),
        level=locker.lockout_level or 0,
        until=until,
        level_at=until,
    )


def _save(session: Session, locker_id: str, state: LockoutState) -> None:
    until = datetime.fromtimestamp(state.until, UTC) if state.until else None
    session.execute(
        update(Locker)
        .where(Locker.id == locker_id)
        .values(
            lockout_state=json.dumps(state.to_dict()),
            failed_code_attempts=math.ceil(state.failures - 1e-9),
            lockout_level=state.level,
            lockout_until=until,
        )
    )


def _window_report(session: Session, locker_id: str, summary, actor: str | None = None) -> None:
    if summary is not None:
        audit.append(
            session,
            actor or f"locker:{locker_id}",
            "code.lockout_ended",
            f"locker:{locker_id}",
            summary.event_data(),
        )


def _closed(session: Session, locker_id: str, state: LockoutState, now: datetime) -> LockoutState:
    """The state with an ended lockout window reported (one audit line per window)."""
    state, summary = machine.close_window(state, now.timestamp())
    _window_report(session, locker_id, summary)
    return state


def lift_lockout(session: Session, locker_id: str, now: datetime, actor: str) -> None:
    """Staff lift the locker's lockout (inside the caller's transaction)."""
    locker = _lock_locker(session, locker_id)
    if locker is None:
        raise NotFound(f"no locker {locker_id!r}")
    state, summary = machine.lift(_state(locker), now.timestamp(), actor)
    _window_report(session, locker_id, summary, actor)
    _save(session, locker_id, state)


def _refused_locked(
    session: Session, locker: Locker, state: LockoutState, now: datetime, second_factor: bool
) -> None:
    """A guess during a lockout: counted, not audited one by one; 429."""
    state = machine.refuse(state, second_factor=second_factor)
    _save(session, locker.id, state)
    session.commit()
    wait = max(1, math.ceil(machine.remaining(state, now.timestamp())))
    what = "code or mobile digits wrong" if second_factor else "too many wrong codes"
    raise TooManyRequests(
        f"{what} at locker {locker.id}: the keypad is locked for {wait} s more; a code "
        "opens with the last 4 digits of the mobile it was sent to (mobile_last4)",
        retry_after=wait,
    )


def _record_failure(
    session: Session,
    policy: CodePolicy,
    locker: Locker,
    state: LockoutState,
    now: datetime,
    reason: str,
) -> int:
    """Count a wrong code and start a lockout at the threshold; attempts left."""
    verdict = machine.fail(state, policy.lockout, now.timestamp())
    detail: dict = {"reason": reason, "failures": verdict.failures}
    left = max(0, policy.lockout_threshold - verdict.failures)
    if verdict.locked:
        until = datetime.fromtimestamp(verdict.state.until, UTC)
        detail |= {
            "lockout_seconds": verdict.seconds,
            "lockout_until": until.isoformat(),
            "level": verdict.state.level,
        }
        left = 0
    _save(session, locker.id, verdict.state)
    audit.append(session, f"locker:{locker.id}", "code.refused", f"locker:{locker.id}", detail)
    return left


def _lock_locker(session: Session, locker_id: str) -> Locker | None:
    """The locker row, locked until this transaction ends, and read afresh.

    Checks at one locker run one at a time: without the lock, concurrent wrong codes would all
    read the same lockout_until before any of them set it, and all be checked (20 guesses
    where 5 are allowed). populate_existing: the caller's session may hold the row already
    (the locker's authentication loaded it), and a stale lockout_until is the bug itself.
    """
    return session.get(Locker, locker_id, with_for_update=True, populate_existing=True)


def check_code(
    session: Session,
    policy: CodePolicy,
    locker_id: str,
    code: str,
    now: datetime,
    mobile_last4: str | None = None,
) -> CheckOutcome:
    """Check and redeem a typed code at a locker; commits (a failure is audited either way).
    During a lockout guesses are not checked: a code opens only with ``mobile_last4``."""
    locker = _lock_locker(session, locker_id)
    if locker is None:
        raise NotFound(f"no locker {locker_id!r}")
    state = _closed(session, locker_id, _state(locker), now)
    locked = machine.locked(state, now.timestamp())
    if locked and mobile_last4 is None:
        _refused_locked(session, locker, state, now, second_factor=False)

    if not is_well_formed(code, policy.digits):
        if locked:
            _refused_locked(session, locker, state, now, second_factor=True)
        left = _record_failure(session, policy, locker, state, now, "malformed")
        session.commit()
        return CheckOutcome(False, attempts_left=left)

    key = derive_locker_key(policy.master_secret, locker_id)
    digest = code_digest(key, code)
    handover = session.scalar(
        select(Handover).where(_live_filter(locker_id), Handover.code_digest == digest)
    )
    usable = (
        handover is not None
        and hmac.compare_digest(handover.code_digest or "", digest)
        and handover.code_redeemed_at is None
        and _code_is_current(policy, handover, now)
    )
    if locked and not (usable and _mobile_matches(session, handover, mobile_last4)):
        _refused_locked(session, locker, state, now, second_factor=True)
    if not usable:
        left = _record_failure(session, policy, locker, state, now, "wrong, used or expired code")
        session.commit()
        return CheckOutcome(False, attempts_left=left)

    # The redeem: only one of two concurrent checks sees code_redeemed_at still NULL.
    won = session.execute(
        update(Handover)
        .where(
            Handover.id == handover.id,
            Handover.code_redeemed_at.is_(None),
            Handover.code_digest == digest,
        )
        .values(code_redeemed_at=now, updated_at=now)
    ).rowcount
    if won != 1:
        session.rollback()
        locker = _lock_locker(session, locker_id)
        state = _state(locker)
        left = _record_failure(session, policy, locker, state, now, "code already used")
        session.commit()
        return CheckOutcome(False, attempts_left=left)
    # An accepted code resets no lockout counter: failures decay by time only.
    _save(session, locker_id, state)
    compartment = session.get(Compartment, handover.compartment_id)
    detail = {
        "handover": handover.id,
        "kind": handover.kind,
        "counter": handover.code_counter,
        "compartment": compartment.number,
        **({"second_factor": "mobile"} if locked else {}),
    }
    audit.append(session, f"locker:{locker_id}", "code.accepted", f"handover:{handover.id}", detail)
    audit.append(
        session,
        f"locker:{locker_id}",
        "door.opened",
        f"locker:{locker_id}",
        {"compartment": compartment.number, "cause": "code", "handover": handover.id},
    )
    session.commit()
    session.refresh(handover)
    return CheckOutcome(True, handover=handover, compartment=compartment)


def _mobile_matches(session: Session, handover: Handover, typed: str | None) -> bool:
    if not machine.well_formed_mobile_digits(typed):
        return False
    record = session.get(ApprovalRecord, handover.record_id)
    last = machine.mobile_last_digits(record.mobile) if record is not None else None
    return last is not None and hmac.compare_digest(last, typed)


def _code_is_current(policy: CodePolicy, handover: Handover, now: datetime) -> bool:
    if handover.kind == HandoverKind.dropoff:
        # A drop-off code opens an empty reserved compartment, until the reservation expires.
        return handover.state == HandoverState.reserved and handover.expires_at > now
    # A pickup code works once the licence is in, and while overdue if configured.
    if handover.state == HandoverState.deposited:
        return True
    return handover.state == HandoverState.overdue and policy.overdue_code_keeps_working
