"""Staff accounts and their life (TOTP enrolment and reset, password change, log-out,
deactivation), roles and sites, staff passes for cabinets, API keys and remote door opening
requests (log-in itself: ``staff_login``).

Roles and sites (docs/api.md): an admin covers every site; a supervisor, staff member or
technician covers their ``site`` (None: every site). Remote opens and locker settings need an
admin or a supervisor covering the locker's site.
"""

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from cloud_api.core import security
from cloud_api.errors import AuthError, Conflict, Forbidden, InputError, NotFound
from cloud_api.models.locker import Compartment, Locker
from cloud_api.models.remote_open import RemoteOpenCreate, RemoteOpenRequest
from cloud_api.models.staff import ApiKey, Role, Scope, Staff, StaffPassIssued
from cloud_api.services import audit, staff_login
from xinbao import staff_pass
from xinbao.codes import derive_locker_key

ROLE_SCOPES: dict[str, frozenset[str]] = {
    Role.admin: frozenset(s.value for s in Scope),
    Role.supervisor: frozenset({Scope.lockers_read.value, Scope.handovers_write.value}),
    Role.staff: frozenset({Scope.lockers_read.value, Scope.handovers_write.value}),
    Role.technician: frozenset({Scope.lockers_read.value}),
}
# Roles that may change a locker (remote opens, runtime settings) at the sites they cover.
SITE_AUTHORITY = frozenset({Role.admin.value, Role.supervisor.value})
# Longest user name that is also a staff number at the kiosk (xinbao.contract.StaffEntry).
STAFF_NO_MAX = 32


def covers(staff: Staff, site: str) -> bool:
    """Whether this member works at ``site`` (admins and members without a site: all)."""
    return staff.role == Role.admin or staff.site is None or staff.site == site


def require_site_authority(staff: Staff, locker: Locker, doing: str) -> None:
    """Only an admin, or a supervisor of this locker's site, may ``doing`` (403 otherwise)."""
    if staff.role not in SITE_AUTHORITY:
        raise Forbidden(f"{doing} needs a supervisor of site {locker.site!r} or an admin")
    if not covers(staff, locker.site):
        raise Forbidden(f"{doing}: locker {locker.id} is at site {locker.site!r}, not yours")


# Roles that do the daily work (loads, collections, recoveries, cancellations).
DAILY_WORK = frozenset({Role.admin.value, Role.supervisor.value, Role.staff.value})


def require_daily_work(staff: Staff, session: Session, locker_id: str | None) -> None:
    """Loads, collections, recoveries and cancellations: a role that does them, at a locker
    of a site this member covers (403 otherwise). A locker the cloud does not know is left
    to the service to refuse."""
    if staff.role not in DAILY_WORK:
        raise Forbidden(f"the role {staff.role!r} does not load, collect or recover")
    locker = session.get(Locker, locker_id) if locker_id is not None else None
    if locker is not None and not covers(staff, locker.site):
        raise Forbidden(f"locker {locker.id} is at site {locker.site!r}, which you do not cover")


# Approval records (search, open, create by hand, approve or reject): the daily-work roles.
# A technician maintains cabinets and has no need to read applicants' names and mobiles.
# Records are not site-scoped: an application belongs to the approval system, and its site is
# only the locker's, chosen for each handover (docs/security.md).
RECORD_WORK = DAILY_WORK
# A CSV batch creates and approves many records at once: admins and supervisors only.
RECORD_IMPORT = frozenset({Role.admin.value, Role.supervisor.value})


def require_record_work(staff: Staff) -> None:
    if staff.role not in RECORD_WORK:
        raise Forbidden(f"the role {staff.role!r} does not work on approval records")


def require_record_import(staff: Staff) -> None:
    if staff.role not in RECORD_IMPORT:
        raise Forbidden("importing records needs a supervisor or an admin")


def create_staff(
    session: Session,
    username: str,
    password: str,
    role: Role,
    actor: str,
    site: str | None = None,
) -> Staff:
    if role == Role.admin and site is not None:
        raise InputError("an admin covers every site: leave 'site' out, or make a supervisor")
    if session.scalar(select(Staff.id).where(Staff.username == username)) is not None:
        raise Conflict(f"staff user {username!r} exists already")
    staff = Staff(
        username=username,
        role=role.value,
        site=site,
        password_hash=security.hash_password(password),
    )
    session.add(staff)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"staff user {username!r} exists already") from None
    audit.append(
        session, actor, "staff.created", f"staff:{username}", {"role": role.value, "site": site}
    )
    session.commit()
    return staff


def get_staff(session: Session, staff_id: int) -> Staff:
    found = session.get(Staff, staff_id, with_for_update=True)
    if found is None:
        raise NotFound(f"no staff member {staff_id}")
    return found


def list_staff(session: Session, offset: int, limit: int) -> list[Staff]:
    return list(session.scalars(select(Staff).order_by(Staff.id).offset(offset).limit(limit)))


def _end_tokens_and_passes(staff: Staff) -> None:
    """Every bearer token issued so far stops at once; every pass issued so far is void at
    each cabinet from its next staff sync (the floor rises past them)."""
    staff.token_generation += 1
    staff.pass_floor = staff.pass_counter


def set_active(session: Session, staff: Staff, active: bool, actor: str) -> Staff:
    """Deactivate (tokens refused at once; the cabinets drop the member at the next staff sync,
    so their passes stop working there) or reactivate (old passes stay void)."""
    if f"staff:{staff.username}" == actor and not active:
        raise Conflict("you cannot deactivate your own account: ask another admin")
    if staff.active == active:
        return staff
    staff.active = active
    _end_tokens_and_passes(staff)
    event = "staff.activated" if active else "staff.deactivated"
    audit.append(session, actor, event, f"staff:{staff.username}", {})
    session.commit()
    return staff


def reset_totp(session: Session, staff: Staff, actor: str) -> Staff:
    """The second factor forgotten (lost phone): the member logs in with the password alone
    and enrols again; their tokens and passes end now."""
    staff.totp_secret = None
    staff.totp_confirmed = False
    _end_tokens_and_passes(staff)
    audit.append(session, actor, "staff.totp_reset", f"staff:{staff.username}", {})
    session.commit()
    return staff


def change_password(
    session: Session,
    staff: Staff,
    current: str,
    new: str,
    now: datetime,
    policy: staff_login.LoginPolicy,
) -> None:
    """The current password again (throttled like log-ins), then the new one; every token of
    the account ends (log in again)."""
    staff_login.check_password_again(session, staff, current, now, policy)
    if current == new:
        raise InputError("the new password is the current one: choose another")
    staff = session.get(Staff, staff.id, with_for_update=True, populate_existing=True)
    staff.password_hash = security.hash_password(new)
    staff.token_generation += 1
    audit.append(
        session, f"staff:{staff.username}", "staff.password_changed", f"staff:{staff.username}", {}
    )
    session.commit()


def log_out(session: Session, staff: Staff) -> None:
    """Ends every bearer token of this account (each device logs in again)."""
    session.execute(
        update(Staff)
        .where(Staff.id == staff.id)
        .values(token_generation=Staff.token_generation + 1)
    )
    audit.append(session, f"staff:{staff.username}", "staff.logout", f"staff:{staff.username}", {})
    session.commit()


def issue_pass(
    session: Session,
    staff: Staff,
    full_login: bool,
    locker_id: str,
    master_secret: bytes,
    now: datetime,
) -> StaffPassIssued:
    """A staff pass for one cabinet and this shift (xinbao.staff_pass), after a log-in with
    password and TOTP; audited (without the pass)."""
    if not (full_login and staff.totp_confirmed):
        raise Forbidden("a staff pass needs a log-in with password and one-time code (TOTP)")
    locker = session.get(Locker, locker_id)
    if locker is None:
        raise NotFound(f"no locker {locker_id}")
    if not covers(staff, locker.site):
        raise Forbidden(f"locker {locker_id} is at site {locker.site!r}, which you do not cover")
    if len(staff.username) > STAFF_NO_MAX:
        raise Conflict(f"user names over {STAFF_NO_MAX} characters cannot log in at a cabinet")
    row = session.get(Staff, staff.id, with_for_update=True, populate_existing=True)
    number = row.pass_counter
    row.pass_counter = number + 1
    # A cabinet takes COUNTER_SPAN numbers from the floor up; older passes give way.
    row.pass_floor = max(row.pass_floor, number + 1 - staff_pass.COUNTER_SPAN)
    window = staff_pass.window_of(now.timestamp())
    pass_key = staff_pass.derive_pass_key(derive_locker_key(master_secret, locker_id))
    code = staff_pass.pass_for(pass_key, locker_id, row.username, window, number)
    valid_until = datetime.fromtimestamp(staff_pass.window_end(window), tz=UTC)
    audit.append(
        session,
        f"staff:{row.username}",
        "staff.pass_issued",
        f"locker:{locker_id}",
        {"number": number, "valid_until": valid_until.isoformat()},
    )
    session.commit()
    return StaffPassIssued(
        locker_id=locker_id,
        staff_no=row.username,
        staff_pass=code,
        number=number,
        valid_until=valid_until,
    )


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
    # The same rule as log-in: the code is spent, and a code of a step already spent (seen at
    # a log-in) is refused, so a code is good once wherever it is typed.
    if not staff_login.take_totp_step(session, staff, code, now):
        raise InputError(
            "that one-time code is not right or was used already: wait for the next one"
        )
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
    locker = session.get(Locker, body.locker_id)
    if locker is None:
        raise NotFound(f"no locker {body.locker_id}")
    require_site_authority(staff, locker, "a remote open")
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
