"""The kiosk: the cabinet's own screen (keypad page) and its local JSON API.

Served by uvicorn inside the controller's event loop (``uvicorn.Server.serve`` as a task), so
a code goes from the HTTP request to the bus thread without crossing another loop or thread.
``POST /api/code`` is also what a QR/barcode scanner and the benchmark use;
``POST /api/lost-code`` forwards a lost-code request to the cloud (lost_code.py). Every
refusal is a 4xx (503: out of service, off line) with a reason word and messages in Chinese
and English; nothing here returns a 500.

A hostile keypad user is expected: ``/api/code``, ``/api/reopen`` and ``/api/staff/login``
are rate-limited per client (429 ``rate_limited``), a lockout is shown on every page load
(``/api/kiosk``), and a jammed door is reopened only for the page that typed its code (the
``reopen_ticket`` it was given) or for staff.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from importlib import resources
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from locker_controller.errors import CodeRefused, StaffRefused
from xinbao.allocation import APPLICANT_MESSAGES
from xinbao.scrape_gate import MESSAGES as SCRAPE_MESSAGES
from xinbao.security_headers import SecurityHeaders, content_security_policy, inline_hashes

MESSAGES = {
    "malformed": ("请输入6到10位数字开箱码", "Please type the 6 to 10 digit code."),
    "wrong": ("开箱码错误，请核对短信", "Wrong code. Please check your SMS."),
    "expired": ("开箱码已过期，请联系工作人员", "This code has expired. Please contact staff."),
    "used": ("开箱码已使用", "This code has already been used."),
    "not_ready": ("证照尚未放入，请等待短信通知", "Not ready yet. Wait for the SMS."),
    "locked_out": (
        "错误次数过多，键盘已暂时锁定。请输入开箱码及接收短信的手机号后四位",
        "Too many wrong codes: the keypad is locked for now. Type your code and the last 4 "
        "digits of the mobile that got the SMS.",
    ),
    "wrong_with_mobile": (
        "开箱码或手机号后四位不正确",
        "The code or the last 4 digits of the mobile are wrong.",
    ),
    "malformed_mobile": ("请输入手机号后四位", "Please type the last 4 digits of your mobile."),
    "rate_limited": ("操作过于频繁，请稍后再试", "Too many requests. Please wait a moment."),
    "out_of_service": (
        "该箱门暂时无法使用，请联系工作人员",
        "This door is out of service. Please contact staff.",
    ),
    # The same words the cloud uses (xinbao.allocation): a fault is not "full".
    **APPLICANT_MESSAGES,
    "no_reopen": ("没有可重新打开的箱门", "There is no door to reopen."),
    "bad_credentials": ("工号或工作证码错误", "Wrong staff number or staff pass."),
    "no_session": ("请重新登录", "Please log in again."),
    "no_handover": ("没有对应的业务", "No such item for this action."),
    "no_compartment": ("没有该箱格", "No such compartment."),
    "not_permitted": ("您无权进行此操作", "You are not allowed to do this."),
    # Forgot my code: one answer whether or not the details match (no oracle for records).
    "lost_code_sent": (
        "如信息无误，新的开箱码将以短信发送到您的手机，原开箱码随即失效。",
        "If the details match, a new code is sent to your mobile by SMS; the old code stops "
        "working.",
    ),
    "offline": (
        "网络暂时不可用，现在无法补发开箱码。请稍后再试，或联系工作人员。",
        "No network connection: a new code cannot be sent right now. Please try again later "
        "or contact staff.",
    ),
    "malformed_application_no": (
        "请输入正确的申请编号（字母、数字和“-”）",
        "Please type your application number (letters, digits and -).",
    ),
}


MESSAGES["bad_request"] = ("请求格式不正确", "The request is not valid.")


def _refusal(
    reason: str, status: int = 400, messages: dict | None = None, **extra: Any
) -> JSONResponse:
    zh, en = (messages or MESSAGES).get(reason, ("操作失败", "Not possible."))
    body = {"ok": False, "reason": reason, "message_zh": zh, "message_en": en, **extra}
    headers = {}
    if status == 429 and extra.get("retry_after"):
        headers["Retry-After"] = str(max(1, int(-(-extra["retry_after"] // 1))))
    return JSONResponse(body, status_code=status, headers=headers)


class RateLimiter:
    """A token bucket per client address: ``burst`` requests at once, then ``per_s``."""

    MAX_CLIENTS = 4096

    def __init__(
        self, burst: int, per_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.per_s = per_s
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self.limited = 0  # requests refused, for status

    def take(self, client: str) -> float:
        """0 when the request may go on, else the seconds until it may."""
        now = self._clock()
        tokens, at = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.per_s)
        if tokens < 1:
            self._buckets[client] = (tokens, now)
            self.limited += 1
            return (1 - tokens) / self.per_s
        if len(self._buckets) >= self.MAX_CLIENTS and client not in self._buckets:
            self._forget_idle(now)
        self._buckets[client] = (tokens - 1, now)
        return 0.0

    def _forget_idle(self, now: float) -> None:
        full_after = self.burst / self.per_s
        for key, (_, at) in list(self._buckets.items()):
            if now - at >= full_after:
                del self._buckets[key]
        if len(self._buckets) >= self.MAX_CLIENTS:
            # Spread over more addresses than can be tracked: start everyone afresh rather
            # than grow without bound (each address still gets only its burst).
            self._buckets.clear()


class ReopenTickets:
    """The right to reopen a jammed door, given to the client whose code opened it."""

    MAX = 256

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._tickets: dict[str, tuple[int, int | None, float]] = {}

    def issue(self, compartment: int, handover_id: int | None) -> str:
        now = self._clock()
        for key, (_, _, until) in list(self._tickets.items()):
            if until <= now:
                del self._tickets[key]
        while len(self._tickets) >= self.MAX:
            self._tickets.pop(next(iter(self._tickets)))
        ticket = secrets.token_urlsafe(18)
        self._tickets[ticket] = (compartment, handover_id, now + self.window_s)
        return ticket

    def handover_for(self, ticket: str | None, compartment: int) -> int | None | bool:
        """The handover a valid ticket for this door names; False when it is not valid."""
        found = self._tickets.get(ticket) if isinstance(ticket, str) else None
        if found is None or found[0] != compartment or found[2] <= self._clock():
            return False
        return found[1]


# What the person at the cabinet is told per unlock outcome (firmware_bridge UnlockOutcome).
OUTCOME_MESSAGES = {
    "opened": ("已打开", "is open"),
    "already_open": ("已打开", "is open"),
    "jammed": ("未能打开，可点击重新开门", "did not open: press reopen"),
    "no_response": (
        "应已打开；如未打开请联系工作人员",
        "should be open; if it is not, please contact staff",
    ),
}


def _opened(compartment: int, outcome: str, **extra: Any) -> dict[str, Any]:
    zh, en = OUTCOME_MESSAGES.get(outcome, OUTCOME_MESSAGES["no_response"])
    return {
        "ok": True,
        "compartment": compartment,
        "outcome": outcome,
        "message_zh": f"{compartment}号箱门{zh}",
        "message_en": f"Door {compartment} {en}",
        "can_reopen": outcome == "jammed",
        **extra,
    }


class CodeIn(BaseModel):
    code: str = Field(max_length=32)
    # During a lockout: the last 4 digits of the mobile the code was sent to.
    mobile_last4: str | None = Field(default=None, max_length=8)


class LostCodeIn(BaseModel):
    application_no: str = Field(max_length=80)
    mobile_last4: str = Field(max_length=8)


class ReopenIn(BaseModel):
    compartment: int = Field(ge=1, le=10_000)
    # From the answer to the code that opened (jammed) this door; staff send their token.
    reopen_ticket: str | None = Field(default=None, max_length=64)


class StaffLoginIn(BaseModel):
    staff_no: str = Field(min_length=1, max_length=32)
    # The 10-digit staff pass for this cabinet, from the dashboard (xinbao.staff_pass).
    staff_pass: str = Field(max_length=16)


class StaffActionIn(BaseModel):
    token: str = Field(max_length=64)
    compartment: int | None = Field(default=None, ge=1, le=10_000)
    handover_id: int | None = Field(default=None, ge=1, le=2**63 - 1)


def build_app(controller, clock: Callable[[], float] = time.monotonic) -> FastAPI:
    """``controller`` is a locker_controller.app.Controller (keypad, staff, doors);
    ``clock`` paces the rate limit and reopen tickets (a bench runs an hour in seconds)."""
    app = FastAPI(title="Xinbao kiosk", docs_url=None, redoc_url=None, openapi_url=None)
    config = controller.config
    page = resources.files("locker_controller").joinpath("kiosk.html").read_text("utf-8")
    # The page's inline script and style run by their hashes; nothing else does.
    page_csp = content_security_policy(*inline_hashes(page))
    app.add_middleware(SecurityHeaders, csp_for_path={"/": page_csp})

    @app.get("/", response_class=HTMLResponse)
    async def kiosk_page() -> str:
        return page

    # The refusal of a malformed code names the length this cabinet's codes have.
    digits = config.code_digits
    said = {
        **MESSAGES,
        "malformed": (f"请输入{digits}位数字开箱码", f"Please type the {digits}-digit code."),
    }

    def refuse(reason: str, status: int = 400, **extra: Any) -> JSONResponse:
        return _refusal(reason, status, said, **extra)

    @app.exception_handler(RequestValidationError)
    async def malformed_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        """A body that is not the expected JSON gets the same shape as every other refusal
        (not FastAPI's bare 422 detail list)."""
        where = request.url.path
        reason = "malformed" if where == "/api/code" else "bad_request"
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return refuse(reason, 422, **({"field": field} if field else {}))

    limiter = RateLimiter(config.kiosk.rate_burst, config.kiosk.rate_per_s, clock)
    tickets = ReopenTickets(config.reopen_window_s, clock)

    def limited(request: Request) -> JSONResponse | None:
        client = request.client.host if request.client else "?"
        wait = limiter.take(client)
        if wait:
            return refuse("rate_limited", 429, retry_after=round(wait, 1))
        return None

    def staff_no_of(authorization: str | None) -> str | None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            return controller.staff.session(token, touch=False).staff_no
        except StaffRefused:
            return None

    @app.post("/api/code")
    async def submit_code(request: Request, body: Annotated[CodeIn, Body()]):
        if (refused := limited(request)) is not None:
            return refused
        try:
            opened = await controller.keypad.submit(body.code, body.mobile_last4)
        except CodeRefused as err:
            status = 429 if err.reason in ("locked_out", "wrong_with_mobile") else 400
            if err.reason in ("out_of_service", "no_free_compartment", "compartments_unavailable"):
                status = 503
            return refuse(err.reason, status, retry_after=err.retry_after, **lockout_view())
        extra = {}
        if opened.outcome.value == "jammed":
            extra["reopen_ticket"] = tickets.issue(opened.compartment, opened.handover_id)
        return _opened(opened.compartment, opened.outcome.value, **extra)

    @app.post("/api/lost-code")
    async def lost_code(request: Request, body: Annotated[LostCodeIn, Body()]):
        """Forgot my code: forwarded to the cloud, which sends a new code by SMS if the
        details match a live handover here. The same answer either way."""
        if (refused := limited(request)) is not None:
            return refused
        try:
            controller.lost_code.request(body.application_no, body.mobile_last4)
        except CodeRefused as err:
            return refuse(err.reason, 503 if err.reason == "offline" else 422)
        zh, en = MESSAGES["lost_code_sent"]
        return {"ok": True, "reason": "lost_code_sent", "message_zh": zh, "message_en": en}

    @app.post("/api/reopen")
    async def reopen(
        request: Request,
        body: Annotated[ReopenIn, Body()],
        authorization: Annotated[str | None, Header(max_length=80)] = None,
    ):
        if (refused := limited(request)) is not None:
            return refused
        staff_no = staff_no_of(authorization)
        handover_id = None
        if staff_no is None:
            handover_id = tickets.handover_for(body.reopen_ticket, body.compartment)
            if handover_id is False:
                # Only the page that typed the code (or staff) may open the door again.
                return refuse("no_reopen", 403)
        try:
            opened = await controller.keypad.reopen(body.compartment, handover_id, staff_no)
        except CodeRefused as err:
            return refuse(err.reason, 409 if err.reason == "no_reopen" else 503)
        extra = {}
        if opened.outcome.value == "jammed" and staff_no is None:
            extra["reopen_ticket"] = tickets.issue(opened.compartment, handover_id)
        return _opened(opened.compartment, opened.outcome.value, **extra)

    def lockout_view() -> dict[str, Any]:
        left = controller.lockout.remaining()
        return {"locked_for_s": left, "second_factor": "mobile_last4" if left else None}

    @app.get("/api/status")
    async def status():
        return controller.status()

    gate = config.metrics.gate()

    @app.get("/metrics")
    async def metrics(request: Request):
        """Prometheus text format (locker_controller/metrics.py), for the addresses and the
        token the config's [metrics] section allows."""
        reason = gate.refusal(
            request.client.host if request.client else None,
            request.headers.get("authorization"),
        )
        if reason is not None:
            zh, en = SCRAPE_MESSAGES[reason]
            body = {"ok": False, "reason": reason, "message_zh": zh, "message_en": en}
            status = 401 if reason == "metrics_token" else 403
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
            return JSONResponse(body, status_code=status, headers=headers)
        return Response(
            generate_latest(controller.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    @app.get("/api/kiosk")
    async def kiosk_settings():
        """What the page needs to behave as configured."""
        return {
            "locker_id": config.locker_id,
            "code_digits": config.code_digits,
            "reopen_window_s": config.reopen_window_s,
            "staff_idle_s": config.staff_session_s,
            # A lockout is shown on every page load, with its countdown.
            **lockout_view(),
        }

    @app.post("/api/staff/login")
    async def staff_login(request: Request, body: Annotated[StaffLoginIn, Body()]):
        if (refused := limited(request)) is not None:
            return refused
        try:
            token = controller.staff.login(body.staff_no, body.staff_pass)
        except StaffRefused as err:
            status = {"locked_out": 429, "not_permitted": 403}.get(err.reason, 401)
            return refuse(err.reason, status)
        return {"ok": True, "token": token, **controller.staff.tasks(token)}

    @app.get("/api/staff/tasks")
    async def staff_tasks(authorization: Annotated[str | None, Header(max_length=80)] = None):
        scheme, _, token = (authorization or "").partition(" ")
        try:
            if scheme.lower() != "bearer" or not token:
                raise StaffRefused("no_session", "send Authorization: Bearer <token>")
            return {"ok": True, **controller.staff.tasks(token)}
        except StaffRefused as err:
            return refuse(err.reason, 401)

    @app.post("/api/staff/logout")
    async def staff_logout(body: Annotated[StaffActionIn, Body()]):
        controller.staff.logout(body.token)
        return {"ok": True}

    async def _staff_action(action: str, body: StaffActionIn):
        desk = controller.staff
        try:
            if action == "load":
                if body.handover_id is None:
                    return refuse("no_handover", 422)
                number, outcome = await desk.load(body.token, body.handover_id)
                return _opened(number, outcome.value)
            if body.compartment is None:
                return refuse("no_compartment", 422)
            outcome = await getattr(desk, action)(body.token, body.compartment)
            return _opened(body.compartment, outcome.value)
        except StaffRefused as err:
            codes = {
                "no_session": 401,
                "not_permitted": 403,
                "out_of_service": 503,
                "no_free_compartment": 503,
                "compartments_unavailable": 503,
            }
            # Staff also see why (which board is silent, which door jammed).
            extra = {"detail": err.detail} if err.detail else {}
            return refuse(err.reason, codes.get(err.reason, 409), **extra)

    def _route(action: str):
        async def endpoint(body: Annotated[StaffActionIn, Body()]):
            return await _staff_action(action, body)

        return endpoint

    for action in ("load", "collect", "recover", "maintenance"):
        app.post(f"/api/staff/{action}", name=f"staff_{action}")(_route(action))

    return app
