"""``GET /metrics`` (Prometheus text format) and the middleware that times every request.

Several uvicorn workers (``xinbao api --workers N``) each count their own requests and
events; a scrape reaches one of them. So with ``PROMETHEUS_MULTIPROC_DIR`` set (``xinbao
api`` sets it for N > 1) the counters live in files there, one per worker, and any worker
answers with the sum of all of them (prometheus-client's multiprocess mode); the database
levels are read by the answering worker (``levels.DatabaseLevels``), the same for all.

The endpoint is gated (``xinbao.scrape_gate``): XINBAO_METRICS_TOKEN and XINBAO_METRICS_ALLOW.
"""

import os
import time
from collections.abc import Callable
from datetime import datetime

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import Engine
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud_api.core.config import Settings
from cloud_api.errors import AuthError, Forbidden
from cloud_api.metrics.instruments import CloudMetrics
from cloud_api.metrics.levels import DatabaseLevels
from xinbao.scrape_gate import MESSAGES, ScrapeGate

UNMATCHED = "<unmatched>"


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def route_of(scope: Scope, app: FastAPI) -> str:
    """The route template that answered (``/api/v1/records/{number}``), the mount's
    (``/dashboard/{path}``), or ``<unmatched>``: never the raw path."""
    route = scope.get("route")
    template = getattr(route, "path_format", None)
    if isinstance(template, str):
        return template
    # Starlette's own routes (/openapi.json, added by FastAPI) leave only their endpoint.
    endpoint = scope.get("endpoint")
    path = scope.get("path", "")
    for candidate in app.router.routes:
        if isinstance(candidate, Mount):
            if path == candidate.path or path.startswith(candidate.path + "/"):
                return f"{candidate.path}/{{path}}"
        elif endpoint is not None and getattr(candidate, "endpoint", None) is endpoint:
            return getattr(candidate, "path_format", UNMATCHED)
    return UNMATCHED


class RequestTimer:
    """Pure ASGI middleware: counts and times each HTTP request by method, route template
    and the status actually sent (after the exception handlers: a problem's status too)."""

    def __init__(self, app: ASGIApp, metrics: CloudMetrics, fastapi_app: FastAPI) -> None:
        self.app = app
        self.metrics = metrics
        self.fastapi_app = fastapi_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.request(
                scope.get("method", ""),
                route_of(scope, self.fastapi_app),
                status,
                time.perf_counter() - started,
            )


def _refused(reason: str) -> AuthError:
    zh, en = MESSAGES[reason]
    error = AuthError(en) if reason == "metrics_token" else Forbidden(en)
    error.extra = {"reason": reason, "message_zh": zh, "message_en": en}
    return error


def mount_metrics(
    app: FastAPI,
    metrics: CloudMetrics,
    settings: Settings,
    engine: Engine,
    clock: Callable[[], datetime],
) -> None:
    """Time every request and serve ``GET /metrics`` behind the scrape gate."""
    networks = settings.metrics_networks
    gate = ScrapeGate(
        token=settings.metrics_token.get_secret_value(),
        allow=tuple(networks) if networks is not None else None,
    )
    levels = DatabaseLevels(engine, clock)
    metrics.registry.register(levels)
    app.add_middleware(RequestTimer, metrics=metrics, fastapi_app=app)

    @app.get("/metrics", include_in_schema=False)
    def scrape(request: Request) -> Response:
        reason = gate.refusal(
            request.client.host if request.client else None,
            request.headers.get("authorization"),
        )
        if reason is not None:
            raise _refused(reason)
        shared = multiprocess_dir()
        if shared is None:
            registry = metrics.registry
        else:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=shared)
            registry.register(levels)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
