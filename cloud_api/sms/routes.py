"""HTTP endpoints of the SMS package.

Two routers, because they need different guards:

- ``router``: ``POST /api/v1/sms/twilio/status``, called by Twilio. No login: each request is
  proven by its ``X-Twilio-Signature``.
- ``staff_router``: ``GET /api/v1/sms/outbox``. It has no guard of its own; ``mount_sms``
  includes it with the staff dependency it is given.
- ``admin_router``: ``GET /api/v1/sms/console-inbox``, with the admin dependency. The inbox
  holds every code the console provider "sent", so whoever reads it can open every
  compartment: administrators only, and only when the console provider is configured (with
  Twilio it is not mounted at all, and answers 404 if a console provider is swapped in).

Both read their engine, settings and provider from ``app.state.sms`` (an ``SmsContext``);
``mount_sms`` sets that and includes both routers.
"""

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from twilio.request_validator import RequestValidator

from cloud_api.sms.config import SmsSettings
from cloud_api.sms.dispatcher import StatusHook
from cloud_api.sms.models import FINAL_STATUSES, SmsMessage, SmsMessagePublic, SmsStatus, utcnow
from cloud_api.sms.providers import ConsoleProvider, SmsProvider

log = logging.getLogger(__name__)

PREFIX = "/api/v1/sms"
_MAX_FORM_BYTES = 64 * 1024
_SID = re.compile(r"^[A-Za-z0-9]{2,64}$")
# Ids are 32-bit integers on PostgreSQL: a larger filter would be a database error, not "none".
_MAX_ID = 2**31 - 1
# Twilio message states and what each means for our row; None = nothing to record.
_TWILIO_STATUS: dict[str, SmsStatus | None] = {
    "accepted": SmsStatus.sent,
    "scheduled": SmsStatus.sent,
    "queued": SmsStatus.sent,
    "sending": SmsStatus.sent,
    "sent": SmsStatus.sent,
    "delivered": SmsStatus.delivered,
    "read": SmsStatus.delivered,
    "undelivered": SmsStatus.undelivered,
    "failed": SmsStatus.failed,
    "canceled": SmsStatus.failed,
    "partially_delivered": None,
    "receiving": None,
    "received": None,
}


@dataclass
class SmsContext:
    engine: Engine
    settings: SmsSettings
    provider: SmsProvider
    # Told of each status a delivery report records, in its transaction (dispatcher.py).
    on_status: StatusHook | None = None


class SmsProblem(Exception):
    """An error answered as an RFC 9457 problem document."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


def problem_response(request: Request, problem: SmsProblem) -> JSONResponse:
    return JSONResponse(
        {
            "type": "about:blank",
            "title": problem.title,
            "status": problem.status,
            "detail": problem.detail,
            "instance": request.url.path,
        },
        status_code=problem.status,
        media_type="application/problem+json",
    )


def get_context(request: Request) -> SmsContext:
    context = getattr(request.app.state, "sms", None)
    if not isinstance(context, SmsContext):
        # An HTTPException, not SmsProblem: dependencies run outside the handlers' try blocks,
        # and the app's own handler turns it into a problem response.
        raise HTTPException(503, "this server has no SMS context installed")
    return context


ContextDep = Annotated[SmsContext, Depends(get_context)]

router = APIRouter(prefix=PREFIX, tags=["sms"])
staff_router = APIRouter(prefix=PREFIX, tags=["sms"])
admin_router = APIRouter(prefix=PREFIX, tags=["sms"])


def _signed_url(request: Request, settings: SmsSettings) -> str:
    """The URL Twilio signed. Behind a proxy our own view of the URL differs from Twilio's, so
    the configured public callback URL wins; the query string is the one Twilio sent."""
    if not settings.status_callback_url:
        return str(request.url)
    public = urlsplit(settings.status_callback_url)
    return urlunsplit((public.scheme, public.netloc, public.path, request.url.query, ""))


async def _read_form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise SmsProblem(
            415, "Unsupported media type", "send the callback as application/x-www-form-urlencoded"
        )
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise SmsProblem(413, "Callback too large", "a status callback is a few hundred bytes")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise SmsProblem(400, "Malformed callback", "the body is not a valid form") from None
    return dict(pairs)


_CALLBACK_FORM = {
    "type": "object",
    "required": ["MessageSid", "MessageStatus"],
    "properties": {
        "MessageSid": {"type": "string", "pattern": _SID.pattern},
        "MessageStatus": {"type": "string", "enum": sorted(_TWILIO_STATUS)},
        "ErrorCode": {"type": "string"},
        "AccountSid": {"type": "string"},
    },
}


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    problem = {"content": {"application/problem+json": {"schema": {"type": "object"}}}}
    return {status: {"description": HTTPStatus(status).phrase, **problem} for status in statuses}


@router.post(
    "/twilio/status",
    status_code=204,
    summary="Twilio message status callback",
    # The body is read by hand (the signature covers the raw form), so it is declared here.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": _CALLBACK_FORM}},
        },
        "parameters": [
            {"name": "X-Twilio-Signature", "in": "header", "schema": {"type": "string"}},
            {"name": "message_id", "in": "query", "schema": {"type": "string"}},
        ],
    },
    responses=_problems(400, 403, 404, 413, 415, 503),
)
async def twilio_status(request: Request, context: ContextDep) -> Response:
    try:
        form = await _read_form(request)
        token = context.settings.twilio_auth_token
        if token is None:
            raise SmsProblem(403, "Forbidden", "no Twilio auth token is configured here")
        signature = request.headers.get("x-twilio-signature", "")
        validator = RequestValidator(token.get_secret_value())
        if not signature or not validator.validate(
            _signed_url(request, context.settings), form, signature
        ):
            raise SmsProblem(403, "Forbidden", "missing or wrong X-Twilio-Signature")
        sid = form.get("MessageSid", "")
        reported = form.get("MessageStatus", "").strip().lower()
        if not _SID.match(sid):
            raise SmsProblem(400, "Malformed callback", "MessageSid is missing or malformed")
        if reported not in _TWILIO_STATUS:
            raise SmsProblem(400, "Malformed callback", f"unknown MessageStatus {reported!r}")
        message_id = request.query_params.get("message_id")
        # The database work is blocking: keep it off the event loop.
        await run_in_threadpool(
            _record_status,
            context.engine,
            sid,
            _TWILIO_STATUS[reported],
            form.get("ErrorCode"),
            message_id,
            context.on_status,
        )
    except SmsProblem as problem:
        return problem_response(request, problem)
    except SQLAlchemyError:
        log.exception("cannot record a Twilio status report")
        problem = SmsProblem(503, "Database unavailable", "the report was not recorded; retry")
        return problem_response(request, problem)
    return Response(status_code=204)


def _record_status(
    engine: Engine,
    sid: str,
    status: SmsStatus | None,
    error_code: str | None,
    message_id: str | None,
    on_status: StatusHook | None = None,
) -> None:
    with Session(engine) as session, session.begin():
        message = session.scalars(
            select(SmsMessage).where(SmsMessage.provider_sid == sid).with_for_update()
        ).first()
        if (
            message is None
            and message_id
            and message_id.isascii()
            and message_id.isdigit()
            and len(message_id) < 19
        ):
            # We crashed between Twilio's accept and recording the sid: the id we put in the
            # callback URL finds the row, and the report fills in the sid.
            candidate = session.get(SmsMessage, int(message_id), with_for_update=True)
            if candidate is not None and candidate.provider_sid is None:
                message = candidate
        if message is None:
            raise SmsProblem(404, "Unknown message", f"no SMS with sid {sid}")
        if message.provider_sid == sid and message.status in (
            SmsStatus.pending,
            SmsStatus.sending,
        ):
            return  # a late report on a send that staff have since requeued: old news
        if status is None or message.status in FINAL_STATUSES:
            return  # reports can arrive out of order: a final state stays final
        if status is SmsStatus.sent and message.status not in (
            SmsStatus.sending,
            SmsStatus.pending,
        ):
            return  # already sent (or dead): an early "queued" report adds nothing
        values: dict[str, Any] = {
            "status": status.value,
            "provider_sid": sid,
            "updated_at": utcnow(),
        }
        values["claimed_until"] = None
        if message.sent_at is None:
            values["sent_at"] = utcnow()
        if message.provider is None:
            values["provider"] = "twilio"
        if error_code:
            values["last_error"] = f"Twilio error {error_code[:20]} ({status.value})"
        session.execute(
            update(SmsMessage)
            .where(SmsMessage.id == message.id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if on_status is not None and status.value != message.status:
            on_status(session, message, status.value, values.get("last_error"), "twilio")


@staff_router.get("/outbox", response_model=list[SmsMessagePublic], summary="SMS outbox")
def list_outbox(
    request: Request,
    context: ContextDep,
    status: Annotated[SmsStatus | None, Query()] = None,
    handover_id: Annotated[int | None, Query(ge=0, le=_MAX_ID)] = None,
    # Stored numbers are E.164; anything else (a NUL byte) matches nothing and PostgreSQL
    # would refuse it outright.
    to_number: Annotated[str | None, Query(max_length=20, pattern=r"^\+?[0-9]{1,19}$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=_MAX_ID)] = None,
) -> list[SmsMessagePublic]:
    """Newest first; page with ``before_id`` = the smallest id of the previous page."""
    query = select(SmsMessage).order_by(SmsMessage.id.desc()).limit(limit)
    if status is not None:
        query = query.where(SmsMessage.status == status.value)
    if handover_id is not None:
        query = query.where(SmsMessage.handover_id == handover_id)
    if to_number is not None:
        query = query.where(SmsMessage.to_number == to_number)
    if before_id is not None:
        query = query.where(SmsMessage.id < before_id)
    with Session(context.engine) as session:
        return [SmsMessagePublic.model_validate(m) for m in session.scalars(query)]


class ConsoleSmsPublic(BaseModel):
    sid: str
    to: str
    body: str
    sent_at: datetime


@admin_router.get(
    "/console-inbox",
    response_model=list[ConsoleSmsPublic],
    summary="Messages the console provider 'sent' (demo and tests only; administrators)",
    responses=_problems(404),  # the console provider is not in use
)
def console_inbox(
    request: Request,
    context: ContextDep,
    to: Annotated[str | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Any:
    if context.settings.provider != "console" or not isinstance(context.provider, ConsoleProvider):
        return problem_response(
            request,
            SmsProblem(
                404,
                "No console inbox",
                "the console inbox exists only with the console SMS provider",
            ),
        )
    return [
        ConsoleSmsPublic(sid=m.sid, to=m.to, body=m.body, sent_at=m.sent_at)
        for m in context.provider.inbox(to=to, limit=limit)
    ]


def mount_sms(
    app: FastAPI,
    context: SmsContext,
    *,
    staff_dependencies: list[Any],
    admin_dependencies: list[Any],
) -> None:
    """Install the context and the routers; the dependencies guard the staff and admin ones
    (required: an unguarded inbox would hand out every code)."""
    app.state.sms = context
    app.include_router(router)
    app.include_router(staff_router, dependencies=staff_dependencies)
    if context.settings.provider == "console":
        app.include_router(admin_router, dependencies=admin_dependencies)
