"""Issuing and checking opening codes (docs/codes.md).

The cloud never stores a code: a handover holds the HOTP counter and a keyed digest of the
code. Checking a typed code is a digest lookup among the locker's live handovers, followed by a
constant-time comparison; redeeming is a conditional UPDATE, so of two concurrent checks of
the same code exactly one wins. Checks at one locker are serialised on its row (FOR UPDATE),
so the brute-force count and lockout hold under concurrency.
"""

import hmac
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, select, update
from sqlmodel import Session

from cloud_api.errors import NotFound, TooManyRequests
from cloud_api.models.handover import ACTIVE_STATES, Handover, HandoverKind, HandoverState
from cloud_api.models.locker import Compartment, Locker
from cloud_api.services import audit
from xinbao.codes import code_digest, code_for, derive_locker_key, is_well_formed

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


def _refuse_if_locked_out(session: Session, locker: Locker, now: datetime) -> None:
    if locker.lockout_until is not None and locker.lockout_until > now:
        wait = math.ceil((locker.lockout_until - now).total_seconds())
        audit.append(
            session,
            f"locker:{locker.id}",
            "code.refused",
            f"locker:{locker.id}",
            {"reason": "locked out", "until": locker.lockout_until.isoformat()},
        )
        session.commit()
        raise TooManyRequests(
            f"too many wrong codes at locker {locker.id}: try again in {wait} s",
            retry_after=wait,
        )


def _record_failure(
    session: Session, policy: CodePolicy, locker: Locker, now: datetime, reason: str
) -> int:
    """Count a wrong code (atomically) and start a lockout at the threshold; attempts left."""
    failures = session.execute(
        update(Locker)
        .where(Locker.id == locker.id)
        .values(failed_code_attempts=Locker.failed_code_attempts + 1)
        .returning(Locker.failed_code_attempts, Locker.lockout_level)
    ).one()
    count, level = failures
    detail: dict = {"reason": reason, "failures": count}
    left = max(0, policy.lockout_threshold - count)
    if count >= policy.lockout_threshold:
        seconds = min(policy.lockout_max_seconds, policy.lockout_base_seconds * 2**level)
        until = now + timedelta(seconds=seconds)
        session.execute(
            update(Locker)
            .where(Locker.id == locker.id)
            .values(failed_code_attempts=0, lockout_level=level + 1, lockout_until=until)
        )
        detail |= {"lockout_seconds": seconds, "lockout_until": until.isoformat()}
        left = 0
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
    session: Session, policy: CodePolicy, locker_id: str, code: str, now: datetime
) -> CheckOutcome:
    """Check and redeem a typed code at a locker; commits (a failure is audited either way)."""
    locker = _lock_locker(session, locker_id)
    if locker is None:
        raise NotFound(f"no locker {locker_id!r}")
    _refuse_if_locked_out(session, locker, now)

    if not is_well_formed(code, policy.digits):
        left = _record_failure(session, policy, locker, now, "malformed")
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
    if not usable:
        left = _record_failure(session, policy, locker, now, "wrong, used or expired code")
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
        left = _record_failure(session, policy, locker, now, "code already used")
        session.commit()
        return CheckOutcome(False, attempts_left=left)
    session.execute(
        update(Locker)
        .where(Locker.id == locker_id)
        .values(failed_code_attempts=0, lockout_level=0, lockout_until=None)
    )
    compartment = session.get(Compartment, handover.compartment_id)
    detail = {
        "handover": handover.id,
        "kind": handover.kind,
        "counter": handover.code_counter,
        "compartment": compartment.number,
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


def _code_is_current(policy: CodePolicy, handover: Handover, now: datetime) -> bool:
    if handover.kind == HandoverKind.dropoff:
        # A drop-off code opens an empty reserved compartment, until the reservation expires.
        return handover.state == HandoverState.reserved and handover.expires_at > now
    # A pickup code works once the licence is in, and while overdue if configured.
    if handover.state == HandoverState.deposited:
        return True
    return handover.state == HandoverState.overdue and policy.overdue_code_keeps_working
