"""Dependencies shared by the routes, as ``Annotated`` aliases (SessionDep, CurrentStaff ...).

Dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency in its
thread pool, and each such hop costs more than the work itself (bench/api_bench.py). Those
that touch the database stay plain functions, so they never block the event loop.

A GET or HEAD request reads: its session is on ``reading(engine)`` (core/db.py) and refuses to
write. A GET route that does write (the personal centre's code fetch audits it) says so with
``@writes_on_read``.
"""

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Header, Path, Query, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from cloud_api.core import security
from cloud_api.core.config import Settings
from cloud_api.core.db import READS_ONLY, reading_session
from cloud_api.errors import AuthError, Forbidden, InputError
from cloud_api.models.common import MAX_INT, LockerId
from cloud_api.models.locker import Locker
from cloud_api.models.staff import Role, Scope, Staff
from cloud_api.services import lockers
from cloud_api.services import staff as staff_service
from cloud_api.services.handovers import HandoverPolicy


async def refuse_repeated_query(request: Request) -> None:
    """No endpoint takes a list in its query string: ``?limit=5&limit=x`` would be read as
    its last value and the others silently dropped, so a repeated name is refused."""
    names = [name for name, _ in request.query_params.multi_items()]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"query parameter {repeated[0][:64]!r} is given more than once")


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def writes_on_read(endpoint: Callable) -> Callable:
    """Mark a GET route that writes: its session is an ordinary one, not a reading one."""
    endpoint.writes_on_read = True  # type: ignore[attr-defined]
    return endpoint


def reads_only(request: Request) -> bool:
    endpoint = request.scope.get("endpoint")
    return request.method in ("GET", "HEAD") and not getattr(endpoint, "writes_on_read", False)


async def get_session(request: Request) -> AsyncIterator[Session]:
    # async: making a Session does no I/O, and a plain generator would cost two trips to the
    # thread pool (in and out). Closing it gives its connection back to the pool; a request
    # that ended mid-transaction rolls back there.
    if reads_only(request):
        session = reading_session(request.app.state.read_engine)
    else:
        session = Session(request.app.state.engine, expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()


async def get_now(request: Request) -> datetime:
    return request.app.state.clock()


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
NowDep = Annotated[datetime, Depends(get_now)]
DbId = Annotated[int, Path(ge=1, le=MAX_INT)]
LockerIdPath = Annotated[LockerId, Path()]


@dataclass(frozen=True)
class Principal:
    """Who is calling: a staff member (bearer token) or an integrator (API key)."""

    name: str  # as it appears in the audit trail, e.g. "staff:li" or "api_key:3"
    scopes: frozenset[str]
    staff: Staff | None = None
    # A staff token from a log-in with password and TOTP (what a staff pass needs).
    full_login: bool = False

    def owner(self, *, reading: bool = False) -> str | None:
        """Whose records and handovers this caller may touch: its own name for an integrator
        key (to read others' it needs records:read:all; to change them nothing suffices),
        None (everyone's) for staff."""
        if self.staff is not None:
            return None
        if reading and Scope.records_read_all.value in self.scopes:
            return None
        return self.name


def _bearer(authorization: str | None) -> str | None:
    # An empty header is a malformed credential, not an absent one: it must not fall through
    # to another credential and pass.
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("use 'Authorization: Bearer <token>' from POST /api/v1/staff/login")
    return token.strip()


def _staff_from_token(
    session: Session, settings: Settings, token: str, now: datetime
) -> tuple[Staff, security.TokenClaims]:
    claims = security.read_token(settings.token_key, token, now)
    staff = session.get(Staff, claims.staff_id)
    if staff is None or not staff.active:
        raise AuthError("this account is disabled: ask an administrator")
    # Logged out, password changed, TOTP reset or deactivated since: the token is over.
    if claims.generation != staff.token_generation:
        raise AuthError("this session has ended (logged out or account changed): log in again")
    return staff, claims


# Declared as security schemes, so the OpenAPI document says how to authenticate (and tools
# such as schemathesis do not generate these headers as ordinary parameters). auto_error
# off: the checks below give the errors, as problem documents with a clear message.
_staff_bearer = HTTPBearer(
    scheme_name="StaffBearer",
    auto_error=False,
    description="a staff token from POST /api/v1/staff/login",
)
_api_key = APIKeyHeader(
    name="X-API-Key", scheme_name="IntegratorKey", auto_error=False, description="an API key"
)
_locker_key = APIKeyHeader(
    name="X-Locker-Key",
    scheme_name="LockerKey",
    auto_error=False,
    description="the locker's own key (lockers only)",
)


def get_principal(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    _bearer_declared: Annotated[HTTPAuthorizationCredentials | None, Depends(_staff_bearer)],
    x_api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal:
    # On SQLite a request that writes reads who is calling in a deferred transaction and
    # ends it here, so the write lock (and the writers' queue, core/db.py) is taken only by
    # the route's own transaction, and a route that opens a session of its own (the SMS
    # outbox) does not wait for this one. On PostgreSQL the check is the first statement of
    # the request's one transaction: no second checkout, no COMMIT round trip.
    sqlite_writer = not session.info.get(READS_ONLY) and session.get_bind().dialect.name == "sqlite"
    if sqlite_writer:
        session.connection(execution_options={READS_ONLY: True})
    # The raw header, not the parsed credentials: a malformed one gets its own message.
    token = _bearer(request.headers.get("authorization"))
    if token is not None:
        staff, claims = _staff_from_token(session, settings, token, now)
        principal = Principal(
            f"staff:{staff.username}",
            staff_service.ROLE_SCOPES.get(staff.role, frozenset()),
            staff,
            full_login=claims.mfa,
        )
    elif x_api_key:
        key = staff_service.authenticate_api_key(session, x_api_key.strip())
        principal = Principal(f"api_key:{key.id}", frozenset(key.scopes.split()))
    else:
        raise AuthError("log in (Authorization: Bearer) or send an API key (X-API-Key)")
    if sqlite_writer:
        session.commit()
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(scope: Scope) -> Callable[[Principal], Principal]:
    async def check(principal: PrincipalDep) -> Principal:
        staff_service.require_scope(principal.scopes, scope)
        return principal

    return check


async def get_current_staff(principal: PrincipalDep) -> Staff:
    if principal.staff is None:
        raise Forbidden("this needs a staff log-in, not an API key")
    return principal.staff


async def get_current_admin(staff: Annotated[Staff, Depends(get_current_staff)]) -> Staff:
    if staff.role != Role.admin:
        raise Forbidden("this needs an administrator")
    return staff


async def get_staff_principal(principal: PrincipalDep) -> Principal:
    if principal.staff is None:
        raise Forbidden("this needs a staff log-in, not an API key")
    return principal


CurrentStaff = Annotated[Staff, Depends(get_current_staff)]
StaffPrincipal = Annotated[Principal, Depends(get_staff_principal)]
CurrentAdmin = Annotated[Staff, Depends(get_current_admin)]
RecordsWriter = Annotated[Principal, Depends(require(Scope.records_write))]
HandoversWriter = Annotated[Principal, Depends(require(Scope.handovers_write))]
LockersWriter = Annotated[Principal, Depends(require(Scope.lockers_write))]
LockersReader = Annotated[Principal, Depends(require(Scope.lockers_read))]


def get_calling_locker(
    session: SessionDep,
    locker_id: LockerIdPath,
    x_locker_key: Annotated[str | None, Depends(_locker_key)],
) -> Locker:
    if not x_locker_key or len(x_locker_key) > 200:
        raise AuthError("a locker authenticates with its key in the X-Locker-Key header")
    return lockers.authenticate(session, locker_id, x_locker_key)


CallingLocker = Annotated[Locker, Depends(get_calling_locker)]
IdempotencyKey = Annotated[
    str | None, Header(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")
]


async def get_policy(request: Request) -> HandoverPolicy:
    return request.app.state.policy


PolicyDep = Annotated[HandoverPolicy, Depends(get_policy)]
Offset = Annotated[int, Query(ge=0, le=MAX_INT)]
Limit = Annotated[int, Query(ge=1, le=500)]
