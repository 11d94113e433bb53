"""Staff accounts, TOTP enrolment, API keys and remote door opening requests (log-in itself:
``staff_login``)."""

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from cloud_api.core import security
from cloud_api.errors import AuthError, Conflict, Forbidden, InputError, NotFound
from cloud_api.models.locker import Compartment
from cloud_api.models.remote_open import RemoteOpenCreate, RemoteOpenRequest
from cloud_api.models.staff import ApiKey, Role, Scope, Staff
from cloud_api.services import audit

ROLE_SCOPES: dict[str, frozenset[str]] = {
    Role.admin: frozenset(s.value for s in Scope),
    Role.staff: frozenset({Scope.lockers_read.value, Scope.handovers_write.value}),
}


def create_staff(session: Session, username: str, password: str, role: Role, actor: str) -> Staff:
    if session.scalar(select(Staff.id).where(Staff.username == username)) is not None:
        raise Conflict(f"staff user {username!r} exists already")
    staff = Staff(
        username=username, role=role.value, password_hash=security.hash_password(password)
    )
    session.add(staff)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"staff user {username!r} exists already") from None
    audit.append(session, actor, "staff.created", f"staff:{username}", {"role": role.value})
    session.commit()
    return staff


def begin_totp(session: Session, staff: Staff) -> tuple[str, str]:
    """A new (unconfirmed) TOTP secret; log-in needs the code only after it is confirmed."""
    if staff.totp_confirmed:
        raise Conflict("a second factor is already enrolled")
    staff.totp_secret = security.new_totp_secret()
    audit.append(
        session, f"staff:{staff.username}", "staff.totp_enrolment", f"staff:{staff.username}", {}
    )
    session.commit()
    return security.totp_provisioning(staff.totp_secret, staff.username)


def confirm_totp(session: Session, staff: Staff, code: str, now: datetime) -> None:
    if staff.totp_secret is None or staff.totp_confirmed:
        raise Conflict("start the enrolment first: POST /api/v1/staff/me/totp")
    if not security.totp_ok(staff.totp_secret, code, now):
        raise InputError("that one-time code is not right: check the phone's clock and retry")
    # The confirming code is not spent: confirming is done by someone already logged in, and
    # a log-in right after (the demo does this) would otherwise wait up to 30 s for a new code.
    staff.totp_confirmed = True
    audit.append(
        session, f"staff:{staff.username}", "staff.totp_confirmed", f"staff:{staff.username}", {}
    )
    session.commit()


def create_api_key(
    session: Session, name: str, scopes: list[Scope], actor: str
) -> tuple[ApiKey, str]:
    secret = security.new_secret()
    key = ApiKey(
        name=name,
        key_digest=security.secret_digest(secret),
        scopes=" ".join(sorted({s.value for s in scopes})),
    )
    session.add(key)
    session.flush()
    audit.append(
        session, actor, "api_key.created", f"api_key:{key.id}", {"name": name, "scopes": key.scopes}
    )
    session.commit()
    # The id in the key lets us find its row without a scan; the secret part is what counts.
    return key, f"xbk_{key.id}_{secret}"


def list_api_keys(session: Session, offset: int, limit: int) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id).offset(offset).limit(limit)))


def _live_key(session: Session, key_id: int, doing: str) -> ApiKey:
    key = session.get(ApiKey, key_id, with_for_update=True)
    if key is None:
        raise NotFound(f"no API key {key_id}")
    if not key.active:
        raise Conflict(f"API key {key_id} is revoked: create a new one instead of {doing} it")
    return key


def revoke_api_key(session: Session, key_id: int, actor: str, now: datetime) -> ApiKey:
    """The key stops working with the next request (keys are looked up on every call)."""
    key = _live_key(session, key_id, "revoking")
    key.active = False
    key.revoked_at = now
    audit.append(session, actor, "api_key.revoked", f"api_key:{key.id}", {"name": key.name})
    session.commit()
    return key


def rotate_api_key(session: Session, key_id: int, actor: str, now: datetime) -> tuple[ApiKey, str]:
    """A new secret for the same key (id, name, scopes); the old secret stops working at once.
    For a switch-over without a gap, create a second key and revoke the first when done."""
    key = _live_key(session, key_id, "rotating")
    secret = security.new_secret()
    key.key_digest = security.secret_digest(secret)
    key.rotated_at = now
    audit.append(session, actor, "api_key.rotated", f"api_key:{key.id}", {"name": key.name})
    session.commit()
    return key, f"xbk_{key.id}_{secret}"


def authenticate_api_key(session: Session, presented: str) -> ApiKey:
    prefix, _, rest = presented.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != "xbk" or not key_id.isdigit() or len(key_id) > 9 or not secret:
        raise AuthError("the API key is malformed")
    key = session.get(ApiKey, int(key_id))
    if key is None or not key.active or not security.secret_matches(key.key_digest, secret):
        raise AuthError("the API key is not valid")
    return key


def require_scope(scopes: frozenset[str] | set[str], needed: Scope) -> None:
    if needed.value not in scopes:
        raise Forbidden(f"this credential lacks the scope '{needed.value}'")


def request_remote_open(
    session: Session, staff: Staff, body: RemoteOpenCreate
) -> RemoteOpenRequest:
    """Record and authorise a remote open; the MQTT integration sends the command later."""
    compartment = session.scalar(
        select(Compartment).where(
            Compartment.locker_id == body.locker_id, Compartment.number == body.compartment_number
        )
    )
    if compartment is None:
        raise NotFound(f"locker {body.locker_id} has no compartment {body.compartment_number}")
    request = RemoteOpenRequest(
        locker_id=body.locker_id,
        compartment_number=body.compartment_number,
        staff_id=staff.id,
        reason=body.reason,
    )
    session.add(request)
    session.flush()
    audit.append(
        session,
        f"staff:{staff.username}",
        "door.remote_open_requested",
        f"locker:{body.locker_id}",
        {
            "compartment": body.compartment_number,
            "reason": body.reason,
            "request": request.id,
            "handover": compartment.handover_id,
        },
    )
    session.commit()
    return request


def note_remote_open(session: Session, request: RemoteOpenRequest, detail: str) -> None:
    """Say why a remote open stays ``pending`` (it was never sent)."""
    request.detail = detail
    session.commit()
