"""The kiosk: the cabinet's own screen (keypad page) and its local JSON API.

Served by uvicorn inside the controller's event loop (``uvicorn.Server.serve`` as a task), so
a code goes from the HTTP request to the bus thread without crossing another loop or thread.
``POST /api/code`` is also what a QR/barcode scanner and the benchmark use. Every refusal is
a 4xx with a reason word and messages in Chinese and English; nothing here returns a 500.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from locker_controller.errors import CodeRefused, StaffRefused
from xinbao.allocation import APPLICANT_MESSAGES
from xinbao.security_headers import SecurityHeaders, content_security_policy, inline_hashes

MESSAGES = {
    "malformed": ("请输入6到10位数字开箱码", "Please type the 6 to 10 digit code."),
    "wrong": ("开箱码错误，请核对短信", "Wrong code. Please check your SMS."),
    "expired": ("开箱码已过期，请联系工作人员", "This code has expired. Please contact staff."),
    "used": ("开箱码已使用", "This code has already been used."),
    "not_ready": ("证照尚未放入，请等待短信通知", "Not ready yet. Wait for the SMS."),
    "locked_out": ("错误次数过多，请稍后再试", "Too many wrong codes. Please try again later."),
    "out_of_service": (
        "该箱门暂时无法使用，请联系工作人员",
        "This door is out of service. Please contact staff.",
    ),
    # The same words the cloud uses (xinbao.allocation): a fault is not "full".
    **APPLICANT_MESSAGES,
    "no_reopen": ("没有可重新打开的箱门", "There is no door to reopen."),
    "bad_credentials": ("工号或动态码错误", "Wrong staff number or one-time code."),
    "no_session": ("请重新登录", "Please log in again."),
    "no_handover": ("没有对应的业务", "No such item for this action."),
    "no_compartment": ("没有该箱格", "No such compartment."),
    "not_permitted": ("您无权进行此操作", "You are not allowed to do this."),
}


def _refusal(reason: str, status: int = 400, **extra: Any) -> JSONResponse:
    zh, en = MESSAGES.get(reason, ("操作失败", "Not possible."))
    body = {"ok": False, "reason": reason, "message_zh": zh, "message_en": en, **extra}
    return JSONResponse(body, status_code=status)


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


def _opened(compartment: int, outcome: str) -> dict[str, Any]:
    zh, en = OUTCOME_MESSAGES.get(outcome, OUTCOME_MESSAGES["no_response"])
    return {
        "ok": True,
        "compartment": compartment,
        "outcome": outcome,
        "message_zh": f"{compartment}号箱门{zh}",
        "message_en": f"Door {compartment} {en}",
        "can_reopen": outcome == "jammed",
    }


class CodeIn(BaseModel):
    code: str = Field(max_length=32)


class ReopenIn(BaseModel):
    compartment: int = Field(ge=1, le=10_000)


class StaffLoginIn(BaseModel):
    staff_no: str = Field(min_length=1, max_length=32)
    totp: str = Field(max_length=16)


class StaffActionIn(BaseModel):
    token: str = Field(max_length=64)
    compartment: int | None = Field(default=None, ge=1, le=10_000)
    handover_id: int | None = Field(default=None, ge=1, le=2**63 - 1)


def build_app(controller) -> FastAPI:
    """``controller`` is a locker_controller.app.Controller (keypad, staff, doors)."""
    app = FastAPI(title="Xinbao kiosk", docs_url=None, redoc_url=None, openapi_url=None)
    page = resources.files("locker_controller").joinpath("kiosk.html").read_text("utf-8")
    # The page's inline script and style run by their hashes; nothing else does.
    page_csp = content_security_policy(*inline_hashes(page))
    app.add_middleware(SecurityHeaders, csp_for_path={"/": page_csp})

    @app.get("/", response_class=HTMLResponse)
    async def kiosk_page() -> str:
        return page

    @app.post("/api/code")
    async def submit_code(body: Annotated[CodeIn, Body()]):
        try:
            opened = await controller.keypad.submit(body.code)
        except CodeRefused as err:
            status = 429 if err.reason == "locked_out" else 400
            if err.reason in ("out_of_service", "no_free_compartment", "compartments_unavailable"):
                status = 503
            return _refusal(err.reason, status, retry_after=err.retry_after)
        return _opened(opened.compartment, opened.outcome.value)

    @app.post("/api/reopen")
    async def reopen(body: Annotated[ReopenIn, Body()]):
        try:
            opened = await controller.keypad.reopen(body.compartment)
        except CodeRefused as err:
            return _refusal(err.reason, 409 if err.reason == "no_reopen" else 503)
        return _opened(opened.compartment, opened.outcome.value)

    @app.get("/api/status")
    async def status():
        return controller.status()

    @app.get("/api/kiosk")
    async def kiosk_settings():
        """What the page needs to behave as configured."""
        config = controller.config
        return {
            "locker_id": config.locker_id,
            "code_digits": config.code_digits,
            "reopen_window_s": config.reopen_window_s,
            "staff_idle_s": config.staff_session_s,
        }

    @app.post("/api/staff/login")
    async def staff_login(body: Annotated[StaffLoginIn, Body()]):
        try:
            token = controller.staff.login(body.staff_no, body.totp)
        except StaffRefused as err:
            status = {"locked_out": 429, "not_permitted": 403}.get(err.reason, 401)
            return _refusal(err.reason, status)
        return {"ok": True, "token": token, **controller.staff.tasks(token)}

    @app.get("/api/staff/tasks")
    async def staff_tasks(authorization: Annotated[str | None, Header(max_length=80)] = None):
        scheme, _, token = (authorization or "").partition(" ")
        try:
            if scheme.lower() != "bearer" or not token:
                raise StaffRefused("no_session", "send Authorization: Bearer <token>")
            return {"ok": True, **controller.staff.tasks(token)}
        except StaffRefused as err:
            return _refusal(err.reason, 401)

    @app.post("/api/staff/logout")
    async def staff_logout(body: Annotated[StaffActionIn, Body()]):
        controller.staff.logout(body.token)
        return {"ok": True}

    async def _staff_action(action: str, body: StaffActionIn):
        desk = controller.staff
        try:
            if action == "load":
                if body.handover_id is None:
                    return _refusal("no_handover", 422)
                number, outcome = await desk.load(body.token, body.handover_id)
                return _opened(number, outcome.value)
            if body.compartment is None:
                return _refusal("no_compartment", 422)
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
            return _refusal(err.reason, codes.get(err.reason, 409), **extra)

    def _route(action: str):
        async def endpoint(body: Annotated[StaffActionIn, Body()]):
            return await _staff_action(action, body)

        return endpoint

    for action in ("load", "collect", "recover", "maintenance"):
        app.post(f"/api/staff/{action}", name=f"staff_{action}")(_route(action))

    return app
