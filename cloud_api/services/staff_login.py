"""Staff log-in: password (argon2), then the TOTP code, with a per-user-name throttle.

Throttle: after ``threshold`` failures in a row for one user name, log-ins for that name are
refused without looking at the password for ``base * 2**level`` seconds (capped), and the
level rises with each lockout until a log-in succeeds. It is kept per user name whether or not
the account exists, so the answers do not reveal which names do. Every failure, lockout and
refusal is audited.

The throttle row is locked (SELECT ... FOR UPDATE) for the whole check, so concurrent guesses
at one name are counted one after the other and cannot outrun the lockout.

TOTP: a code is good for its 30-second step (and one either side, for phone clocks), so it
could be replayed by someone looking over the shoulder. The step of the last accepted code is
stored per account, and only a later step is accepted (RFC 6238 section 5.2).
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session

from cloud_api.core import security
from cloud_api.errors import AuthError, TooManyRequests
from cloud_api.models.staff import LoginThrottle, Staff
from cloud_api.services import audit

WRONG = "wrong user name, password or one-time code"


@dataclass(frozen=True)
class LoginPolicy:
    threshold: int = 5
    base_seconds: float = 30
    max_seconds: float = 900


THROTTLE_KEPT = timedelta(days=1)


def forget_stale_throttles(session: Session, now: datetime) -> int:
    """Drop throttle rows with no lockout running and no failure for THROTTLE_KEPT; the
    caller commits. Returns how many."""
    return session.execute(
        delete(LoginThrottle).where(
            LoginThrottle.updated_at < now - THROTTLE_KEPT,
            or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now),
        )
    ).rowcount


def _throttle(session: Session, username: str, now: datetime) -> LoginThrottle:
    """This name's throttle row, created if need be, locked until the transaction ends."""
    insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(LoginThrottle)
        .values(username=username, failures=0, level=0, updated_at=now)
        .on_conflict_do_nothing(index_elements=["username"])
    )
    return session.get(LoginThrottle, username, with_for_update=True, populate_existing=True)


def _refuse_while_locked(session: Session, throttle: LoginThrottle, now: datetime) -> None:
    if throttle.locked_until is None or throttle.locked_until <= now:
        return
    wait = math.ceil((throttle.locked_until - now).total_seconds())
    name = throttle.username
    audit.append(
        session,
        f"staff:{name}",
        "staff.login_throttled",
        f"staff:{name}",
        {"until": throttle.locked_until.isoformat()},
    )
    session.commit()
    raise TooManyRequests(
        f"too many failed log-ins for {name!r}: try again in {wait} s", retry_after=wait
    )


def _fail(
    session: Session, throttle: LoginThrottle, policy: LoginPolicy, now: datetime, why: str
) -> None:
    throttle.failures += 1
    throttle.updated_at = now
    detail: dict = {"failures": throttle.failures, "why": why}
    if throttle.failures >= policy.threshold:
        seconds = min(policy.max_seconds, policy.base_seconds * 2**throttle.level)
        throttle.locked_until = now + timedelta(seconds=seconds)
        throttle.level += 1
        throttle.failures = 0
        detail |= {"lockout_seconds": seconds, "locked_until": throttle.locked_until.isoformat()}
    name = throttle.username
    audit.append(session, f"staff:{name}", "staff.login_failed", f"staff:{name}", detail)
    session.commit()
    raise AuthError(WRONG)


def _take_totp_step(session: Session, staff: Staff, code: str | None, now: datetime) -> bool:
    """Accept ``code`` if it is right and newer than the last one accepted; records its step."""
    step = security.totp_step(staff.totp_secret, code or "", now)
    if step is None:
        return False
    # Conditional, so of two log-ins racing with one code only one gets through.
    won = session.execute(
        update(Staff)
        .where(
            Staff.id == staff.id,
            or_(Staff.totp_last_step.is_(None), Staff.totp_last_step < step),
        )
        .values(totp_last_step=step)
    ).rowcount
    return won == 1


def login(
    session: Session,
    username: str,
    password: str,
    totp: str | None,
    token_key: bytes,
    ttl: timedelta,
    now: datetime,
    policy: LoginPolicy = LoginPolicy(),
) -> tuple[str, datetime, Staff]:
    throttle = _throttle(session, username, now)
    _refuse_while_locked(session, throttle, now)
    staff = session.scalar(select(Staff).where(Staff.username == username))
    if staff is None:
        security.burn_password_time(password)
        _fail(session, throttle, policy, now, "password")
    if not (staff.active and security.verify_password(staff.password_hash, password)):
        _fail(session, throttle, policy, now, "password")
    if staff.totp_confirmed and not _take_totp_step(session, staff, totp, now):
        _fail(session, throttle, policy, now, "one-time code")
    session.execute(delete(LoginThrottle).where(LoginThrottle.username == username))
    audit.append(session, f"staff:{username}", "staff.login", f"staff:{username}", {})
    session.commit()
    token = security.issue_token(
        token_key,
        staff.id,
        staff.role,
        now,
        ttl,
        generation=staff.token_generation,
        mfa=staff.totp_confirmed,
    )
    return token, now + ttl, staff


def take_totp_step(session: Session, staff: Staff, code: str | None, now: datetime) -> bool:
    """For every other path that checks this account's TOTP (enrolment's confirmation): the
    same rule as log-in, so a step spent anywhere is spent everywhere."""
    return _take_totp_step(session, staff, code, now)


def check_password_again(
    session: Session, staff: Staff, password: str, now: datetime, policy: LoginPolicy
) -> None:
    """A logged-in member's password, asked again (to change it): failures count towards the
    same per-name throttle as log-ins, so a stolen token cannot guess it faster."""
    throttle = _throttle(session, staff.username, now)
    _refuse_while_locked(session, throttle, now)
    if not security.verify_password(staff.password_hash, password):
        _fail(session, throttle, policy, now, "password (change)")
    session.execute(delete(LoginThrottle).where(LoginThrottle.username == staff.username))
