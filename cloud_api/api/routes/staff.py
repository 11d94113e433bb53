"""Staff: log-in and second factor, loading licences, recovery tasks, remote opens, accounts."""

from datetime import timedelta

from fastapi import APIRouter

from cloud_api.api.deps import (
    CurrentAdmin,
    CurrentStaff,
    DbId,
    Limit,
    NowDep,
    Offset,
    PolicyDep,
    SessionDep,
    SettingsDep,
    StaffPrincipal,
)
from cloud_api.api.locker_sync import BridgeDep, sync_handover
from cloud_api.api.problems import problem_responses
from cloud_api.errors import NotFound
from cloud_api.models.code_reissue import CodeResent
from cloud_api.models.common import ApplicationNumber
from cloud_api.models.handover import HandoverKind, HandoverPublic, HandoverState, LoadRequest
from cloud_api.models.remote_open import RemoteOpenCreate, RemoteOpenPublic, RemoteOpenRequest
from cloud_api.models.staff import (
    ApiKeyCreate,
    ApiKeyIssued,
    ApiKeyPublic,
    LoginRequest,
    PasswordChange,
    Staff,
    StaffCreate,
    StaffPassIssued,
    StaffPassRequest,
    StaffPublic,
    TokenPublic,
    TotpConfirm,
    TotpEnrolment,
)
from cloud_api.services import handovers, lost_codes, staff_login
from cloud_api.services import staff as staff_service

router = APIRouter(prefix="/api/v1/staff", tags=["staff"])
keys_router = APIRouter(prefix="/api/v1/api-keys", tags=["staff"])


def _public(staff: Staff) -> StaffPublic:
    return StaffPublic(
        id=staff.id,
        username=staff.username,
        role=staff.role,
        site=staff.site,
        totp_enabled=staff.totp_confirmed,
        active=staff.active,
    )


@router.post(
    "/login",
    response_model=TokenPublic,
    responses={429: {"description": "too many failed log-ins for this user name"}},
)
def login(body: LoginRequest, session: SessionDep, settings: SettingsDep, now: NowDep):
    """A bearer token for the account; after repeated failures for one user name, log-ins for
    it are refused for a while (429 with Retry-After), growing with each lockout."""
    token, expires, _ = staff_login.login(
        session,
        body.username,
        body.password,
        body.totp,
        settings.token_key,
        timedelta(minutes=settings.token_ttl_minutes),
        now,
        _login_policy(settings),
    )
    return TokenPublic(access_token=token, expires_at=expires)


def _login_policy(settings) -> staff_login.LoginPolicy:
    return staff_login.LoginPolicy(
        threshold=settings.login_lockout_threshold,
        base_seconds=settings.login_lockout_base_seconds,
        max_seconds=settings.login_lockout_max_seconds,
    )


@router.post("/logout", status_code=204)
def logout(staff: CurrentStaff, session: SessionDep):
    """Ends this account's bearer tokens at once (every device it is logged in on)."""
    staff_service.log_out(session, staff)


@router.post(
    "/me/password",
    status_code=204,
    responses={429: {"description": "too many wrong passwords for this user name"}},
)
def change_password(
    body: PasswordChange,
    staff: CurrentStaff,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
):
    """The current password, then the new one (10+ characters); wrong current passwords
    count towards the log-in throttle. Every token of the account ends: log in again."""
    staff_service.change_password(
        session, staff, body.current_password, body.new_password, now, _login_policy(settings)
    )


@router.post("/me/passes", response_model=StaffPassIssued, status_code=201)
def issue_staff_pass(
    body: StaffPassRequest,
    who: StaffPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
):
    """A staff pass for one cabinet (a locker of a site you cover) and this shift: type the
    staff number and the 10 digits at that cabinet's kiosk (Staff). Needs a log-in with
    password and one-time code; works at that cabinet only, off line too, until
    ``valid_until`` (12 to 24 h). Audited, without the pass."""
    return staff_service.issue_pass(
        session, who.staff, who.full_login, body.locker_id, settings.master_key, now
    )


@router.get("/me", response_model=StaffPublic)
def me(staff: CurrentStaff):
    return _public(staff)


@router.post("/me/totp", response_model=TotpEnrolment)
def enrol_totp(staff: CurrentStaff, session: SessionDep):
    """Start TOTP enrolment: scan the QR code, then confirm with a code from the app."""
    uri, svg = staff_service.begin_totp(session, staff)
    return TotpEnrolment(provisioning_uri=uri, qr_svg=svg)


@router.post("/me/totp/confirm", response_model=StaffPublic)
def confirm_totp(body: TotpConfirm, staff: CurrentStaff, session: SessionDep, now: NowDep):
    staff_service.confirm_totp(session, staff, body.code, now)
    return _public(staff)


@router.post("", response_model=StaffPublic, status_code=201)
def create_staff(body: StaffCreate, admin: CurrentAdmin, session: SessionDep):
    """A new account: role admin (every site), supervisor, staff or technician (``site``, or
    every site when left out). docs/api.md "Roles and sites"."""
    staff = staff_service.create_staff(
        session, body.username, body.password, body.role, f"staff:{admin.username}", body.site
    )
    return _public(staff)


@router.get("", response_model=list[StaffPublic])
def list_staff(admin: CurrentAdmin, session: SessionDep, offset: Offset = 0, limit: Limit = 100):
    return [_public(s) for s in staff_service.list_staff(session, offset, limit)]


@router.post("/{staff_id}/deactivate", response_model=StaffPublic)
def deactivate_staff(staff_id: DbId, admin: CurrentAdmin, session: SessionDep):
    """Their tokens are refused at once; the cabinets drop them at the next staff sync, and
    their passes stop working there. Audited."""
    staff = staff_service.get_staff(session, staff_id)
    return _public(staff_service.set_active(session, staff, False, f"staff:{admin.username}"))


@router.post("/{staff_id}/activate", response_model=StaffPublic)
def activate_staff(staff_id: DbId, admin: CurrentAdmin, session: SessionDep):
    """Active again (passes issued before the deactivation stay void). Audited."""
    staff = staff_service.get_staff(session, staff_id)
    return _public(staff_service.set_active(session, staff, True, f"staff:{admin.username}"))


@router.post("/{staff_id}/totp/reset", response_model=StaffPublic)
def reset_staff_totp(staff_id: DbId, admin: CurrentAdmin, session: SessionDep):
    """Forget the member's second factor (lost phone): they log in with the password and
    enrol again. Their tokens and staff passes end now. Audited."""
    staff = staff_service.get_staff(session, staff_id)
    return _public(staff_service.reset_totp(session, staff, f"staff:{admin.username}"))


@router.post("/loads", response_model=HandoverPublic, status_code=201)
def start_load(
    body: LoadRequest,
    staff: CurrentStaff,
    session: SessionDep,
    policy: PolicyDep,
    now: NowDep,
    bridge: BridgeDep,
):
    """Start loading an approved licence: reserves a compartment, allocates the pickup code's
    counter; the SMS goes out when the locker reports the licence deposited."""
    staff_service.require_daily_work(staff, session, body.locker_id)
    handover = handovers.start_load(session, policy, body, f"staff:{staff.username}", now)
    sync_handover(bridge, handover)
    return handovers.public(session, handover)


@router.post(
    "/records/{application_number}/resend-code",
    response_model=CodeResent,
    responses=problem_responses(409, 429),
)
def resend_code(
    application_number: ApplicationNumber,
    staff: CurrentStaff,
    session: SessionDep,
    policy: PolicyDep,
    now: NowDep,
    bridge: BridgeDep,
):
    """A new code for the record's live handover (a drop-off reserved, a licence waiting),
    sent by SMS to the record's mobile; the old code stops working at once, at the locker
    too (reservation sync). For the applicant who lost the SMS and calls. Needs a role that
    does the daily work at the locker's site; audited as ``code.reissued`` (via dashboard).
    409 ``no_live_handover`` when no code of the record is out; 429 when one went out less
    than XINBAO_RESEND_MIN_INTERVAL_SECONDS ago."""
    record, reissued = lost_codes.resend_by_staff(session, policy, application_number, staff, now)
    for handover in reissued:
        sync_handover(bridge, handover)
    sent_to = lost_codes.masked_mobile(record.mobile)
    return CodeResent(
        application_number=record.application_number,
        sent_to=sent_to,
        handovers=[handovers.public(session, h) for h in reissued],
        message_zh=f"新开箱码已发送至 {sent_to}，原开箱码已失效",
        message_en=f"A new code went to {sent_to}; the old code no longer works.",
    )


@router.get("/recovery-tasks", response_model=list[HandoverPublic])
def recovery_tasks(
    staff: CurrentStaff, session: SessionDep, offset: Offset = 0, limit: Limit = 100
):
    """Overdue pickups to take back from the lockers."""
    found = handovers.list_in_states(
        session, HandoverKind.pickup, [HandoverState.overdue], offset, limit
    )
    return [handovers.public(session, h) for h in found]


@router.get("/dropoffs-waiting", response_model=list[HandoverPublic])
def dropoffs_waiting(
    staff: CurrentStaff, session: SessionDep, offset: Offset = 0, limit: Limit = 100
):
    """Documents dropped off and waiting for staff to collect them."""
    found = handovers.list_in_states(
        session, HandoverKind.dropoff, [HandoverState.deposited], offset, limit
    )
    return [handovers.public(session, h) for h in found]


@router.post("/handovers/{handover_id}/collect", response_model=HandoverPublic)
def collect_dropoff(
    handover_id: DbId, staff: CurrentStaff, session: SessionDep, now: NowDep, bridge: BridgeDep
):
    handover = handovers.get(session, handover_id)
    staff_service.require_daily_work(staff, session, handover.locker_id)
    handovers.staff_collect(session, handover, f"staff:{staff.username}", now)
    sync_handover(bridge, handover)
    return handovers.public(session, handover)


@router.post("/handovers/{handover_id}/recover", response_model=HandoverPublic)
def recover_pickup(
    handover_id: DbId, staff: CurrentStaff, session: SessionDep, now: NowDep, bridge: BridgeDep
):
    handover = handovers.get(session, handover_id)
    staff_service.require_daily_work(staff, session, handover.locker_id)
    handovers.staff_recover(session, handover, f"staff:{staff.username}", now)
    sync_handover(bridge, handover)
    return handovers.public(session, handover)


@router.post("/handovers/{handover_id}/cancel", response_model=HandoverPublic)
def cancel_handover(
    handover_id: DbId, staff: CurrentStaff, session: SessionDep, now: NowDep, bridge: BridgeDep
):
    handover = handovers.get(session, handover_id)
    staff_service.require_daily_work(staff, session, handover.locker_id)
    handovers.cancel(session, handover, f"staff:{staff.username}", now)
    sync_handover(bridge, handover)
    return handovers.public(session, handover)


@router.post("/remote-opens", response_model=RemoteOpenPublic, status_code=201)
def remote_open(
    body: RemoteOpenCreate, staff: CurrentStaff, session: SessionDep, bridge: BridgeDep
):
    """Open one door for a citizen on the phone: the request is recorded and audited, a signed
    ``unlock`` goes to the locker, and the answer waits for its reply (up to
    XINBAO_MQTT_COMMAND_TIMEOUT_SECONDS). ``status`` is the outcome: opened, jammed,
    no_response, rejected (the locker refused) or timeout; an API running without MQTT
    records the request and leaves it ``pending`` (never sent)."""
    request = staff_service.request_remote_open(session, staff, body)
    if bridge is None:
        staff_service.note_remote_open(
            session, request, "not sent: this API runs without MQTT (XINBAO_MQTT_URL unset)"
        )
    else:
        bridge.remote_open(request.id)
    session.expire_all()
    fresh = session.get(RemoteOpenRequest, request.id)
    session.commit()
    return RemoteOpenPublic.model_validate(fresh, from_attributes=True)


@router.get("/remote-opens/{request_id}", response_model=RemoteOpenPublic)
def get_remote_open(request_id: DbId, staff: CurrentStaff, session: SessionDep):
    found = session.get(RemoteOpenRequest, request_id)
    if found is None:
        raise NotFound(f"no remote open {request_id}")
    return RemoteOpenPublic.model_validate(found, from_attributes=True)


@router.get("/remote-opens", response_model=list[RemoteOpenPublic])
def list_remote_opens(
    staff: CurrentStaff, session: SessionDep, offset: Offset = 0, limit: Limit = 100
):
    from sqlalchemy import select

    rows = session.scalars(
        select(RemoteOpenRequest).order_by(RemoteOpenRequest.id.desc()).offset(offset).limit(limit)
    )
    return [RemoteOpenPublic.model_validate(r, from_attributes=True) for r in rows]


@keys_router.post("", response_model=ApiKeyIssued, status_code=201)
def create_api_key(body: ApiKeyCreate, admin: CurrentAdmin, session: SessionDep):
    """A scoped key for an integrator; the key is shown only in this answer."""
    key, secret = staff_service.create_api_key(
        session, body.name, body.scopes, f"staff:{admin.username}"
    )
    return ApiKeyIssued.of(key, key=secret)


@keys_router.get("", response_model=list[ApiKeyPublic])
def list_api_keys(admin: CurrentAdmin, session: SessionDep, offset: Offset = 0, limit: Limit = 100):
    """Every key, revoked ones included (never the secret: only its digest is stored)."""
    return [ApiKeyPublic.of(k) for k in staff_service.list_api_keys(session, offset, limit)]


@keys_router.post("/{key_id}/revoke", response_model=ApiKeyPublic)
def revoke_api_key(key_id: DbId, admin: CurrentAdmin, session: SessionDep, now: NowDep):
    """The key stops working at once; audited."""
    key = staff_service.revoke_api_key(session, key_id, f"staff:{admin.username}", now)
    return ApiKeyPublic.of(key)


@keys_router.post("/{key_id}/rotate", response_model=ApiKeyIssued)
def rotate_api_key(key_id: DbId, admin: CurrentAdmin, session: SessionDep, now: NowDep):
    """A new secret for the same key and scopes, shown only in this answer; the old secret
    stops working at once. For a switch-over without a gap, create a second key instead and
    revoke the first once the integrator uses the new one."""
    key, secret = staff_service.rotate_api_key(session, key_id, f"staff:{admin.username}", now)
    return ApiKeyIssued.of(key, key=secret)
