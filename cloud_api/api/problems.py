"""Every error as an RFC 9457 problem document (``application/problem+json``).

Service errors (``cloud_api.errors``), FastAPI's validation errors and Starlette's HTTP errors
(404 for unknown paths, 405 ...) all end here, so a client parses one shape. The database
being away (down, restarting, locked past the busy timeout, pool exhausted) is a 503 with
Retry-After: the request changed nothing and may be sent again. A constraint violation that a
service did not foresee is a concurrent change that got there first: 409, logged, since a
service should have turned it into a clearer Conflict. A value the database cannot store (a
number out of its range, a NUL byte in text) that validation let through is the request's
fault: 422, logged so the validation can be tightened. Anything else is a bug: it is logged
with its traceback and answered with a plain 500 problem that reveals nothing.
"""

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloud_api.errors import AuthError, CloudError, Forbidden, IllegalTransition, TooManyRequests

log = logging.getLogger(__name__)
PROBLEM_TYPE_BASE = "https://xinbao.example.cn/problems/"
MEDIA_TYPE = "application/problem+json"
DATABASE_RETRY_AFTER = 5  # seconds: long enough for a failover or a lock to clear


def problem(
    request: Request,
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra,
) -> JSONResponse:
    body = {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _cloud_error(request: Request, exc: CloudError) -> JSONResponse:
    extra: dict = dict(getattr(exc, "extra", None) or {})
    headers: dict[str, str] = {}
    if isinstance(exc, IllegalTransition):
        extra.update(machine=exc.machine, **{"from": exc.current, "to": exc.wanted})
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
        extra["retry_after"] = exc.retry_after
    if isinstance(exc, AuthError) and not isinstance(exc, Forbidden):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.status >= 500:
        log.error("server-side error: %s", exc.detail)
    return problem(request, exc.status, exc.slug, exc.title, exc.detail, headers, **extra)


def _location(loc: tuple) -> str:
    return ".".join(str(part) for part in loc if part != "body") or "body"


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return problem(
            request, 400, "malformed-json", "Malformed JSON", "the request body is not valid JSON"
        )
    # Only location and message: echoing the input back could leak or fail to serialise.
    listed = [
        {"location": _location(tuple(e.get("loc", ()))), "message": str(e.get("msg"))}
        for e in errors[:20]
    ]
    detail = "; ".join(f"{e['location']}: {e['message']}" for e in listed)
    return problem(request, 422, "invalid-request", "Invalid request", detail, errors=listed)


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    try:
        title = HTTPStatus(exc.status_code).phrase
    except ValueError:
        title = "Error"
    detail = exc.detail if isinstance(exc.detail, str) else title
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"there is nothing at {request.url.path}: see /docs for the API"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem(
        request,
        exc.status_code,
        title.lower().replace(" ", "-"),
        title,
        detail,
        headers=getattr(exc, "headers", None),
    )


def _database_away(request: Request, exc: Exception) -> JSONResponse:
    log.error("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return problem(
        request,
        503,
        "database-unavailable",
        "Service unavailable",
        "the database is not answering right now; nothing was changed: retry shortly",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
        retry_after=DATABASE_RETRY_AFTER,
    )


def _integrity(request: Request, exc: IntegrityError) -> JSONResponse:
    log.warning(
        "unforeseen constraint violation on %s %s: %s",
        request.method,
        request.url.path,
        exc.orig,
    )
    return problem(
        request,
        409,
        "conflict",
        "Conflict",
        "a concurrent change got there first; nothing was changed: read the current state "
        "and retry",
    )


def _data_error(request: Request, exc: DataError) -> JSONResponse:
    log.warning(
        "the database refused a value on %s %s (validation should have): %s",
        request.method,
        request.url.path,
        exc.orig,
    )
    return problem(
        request,
        422,
        "invalid-request",
        "Invalid request",
        "a value in the request is out of range or contains characters that cannot be stored",
    )


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(
        request,
        500,
        "internal",
        "Internal error",
        "something went wrong on our side; it has been logged",
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(CloudError, _cloud_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_away)
    app.add_exception_handler(PoolTimeoutError, _database_away)
    app.add_exception_handler(IntegrityError, _integrity)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(Exception, _unexpected)
