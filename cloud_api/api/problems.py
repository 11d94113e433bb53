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
from typing import Any

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


# What the OpenAPI document says a problem looks like (RFC 9457; some carry more members).
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "additionalProperties": True,
}
_WHY = {
    400: "the body is not valid JSON (or not the form the endpoint reads)",
    401: "no credentials, or credentials that are not valid",
    403: "the credentials are valid but do not allow this",
    404: "no such object (or one this caller may not see)",
    409: "the object's state does not allow this now, or a concurrent change got there first",
    413: "the body is too large",
    415: "the body has the wrong media type",
    422: "the request does not fit the schema, or a value in it is refused",
    429: "too many attempts: wait Retry-After seconds",
    503: "the database is not answering: nothing changed, retry after Retry-After seconds",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route or router: these statuses answer a problem document."""
    return {
        status: {"description": _WHY[status], "content": {MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}}}
        for status in statuses
    }


# Which problems a credential brings (security scheme name -> statuses).
_CREDENTIAL_PROBLEMS = {"StaffBearer": (401, 403), "IntegratorKey": (401, 403), "LockerKey": (401,)}


def _problems_of(path: str, operation: dict[str, Any]) -> set[int]:
    statuses = {503}  # every operation reads the database
    if "requestBody" in operation:
        statuses |= {400, 422}
    if operation.get("parameters"):
        statuses.add(422)
    if "{" in path:
        statuses.add(404)
    for requirement in operation.get("security", []):
        for scheme in requirement:
            statuses.update(_CREDENTIAL_PROBLEMS.get(scheme, ()))
    return statuses


def declare_problems(app: FastAPI) -> None:
    """Declare in the OpenAPI document the problems every operation can answer, by what it
    has: 422 (parameters or a body, instead of FastAPI's own 422 shape, which this API never
    sends), 400 (a body that is not JSON), 404 (an id in the path), those of its security
    schemes (401, 403) and 503 (the database away). Statuses particular to an operation (409,
    429, a 404 for an object named in the body) are declared on the route itself."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for path, item in schema.get("paths", {}).items():
            for operation in item.values():
                responses = operation.setdefault("responses", {})
                default_422 = responses.get("422", {}).get("content", {})
                if "application/json" in default_422:
                    del responses["422"]
                for status, response in problem_responses(*_problems_of(path, operation)).items():
                    responses.setdefault(str(status), response)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        return schema

    app.openapi = openapi


def install(app: FastAPI) -> None:
    app.add_exception_handler(CloudError, _cloud_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_away)
    app.add_exception_handler(PoolTimeoutError, _database_away)
    app.add_exception_handler(IntegrityError, _integrity)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(Exception, _unexpected)
