"""The FastAPI application: ``create_app(settings)``.

The lifespan creates the first admin (if the settings name one) and runs the background work
of this process: the SMS dispatcher, the webhook delivery worker, the scheduler and, when
XINBAO_MQTT_URL is set, the MQTT bridge to the lockers (cloud_api.mqtt). All are safe to run
in several API processes at once (see their modules), so a deployment simply runs N identical
processes.
The schema is not created here: ``xinbao api`` runs the alembic migrations before serving.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path

from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry

from cloud_api.api import problems
from cloud_api.api.deps import get_current_admin, get_current_staff, refuse_repeated_query
from cloud_api.api.routes import (
    audit,
    bench,
    handovers,
    lockers,
    monitoring,
    records,
    sms_outbox,
    staff,
    staff_records,
    webhooks,
)
from cloud_api.core.config import Settings
from cloud_api.core.db import make_engine, reading
from cloud_api.metrics import CloudMetrics, mount_metrics
from cloud_api.models.common import utcnow
from cloud_api.mqtt import CloudBridge
from cloud_api.services import audit as audit_trail
from cloud_api.services import bootstrap, outbox, policy, sms_relevance
from cloud_api.services.scheduler import Scheduler
from cloud_api.sms.config import SmsSettings
from cloud_api.sms.dispatcher import SmsDispatcher
from cloud_api.sms.providers import SmsProvider, build_provider
from cloud_api.sms.routes import SmsContext, mount_sms
from cloud_api.web import mount_web
from cloud_api.web.api_docs import mount_docs
from cloud_api.webhooks.delivery import WebhookDispatcher
from xinbao.security_headers import SecurityHeaders

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    sms_settings: SmsSettings | None = None,
    sms_provider: SmsProvider | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> FastAPI:
    engine = make_engine(settings.database_url)
    audit_trail.use_key(settings.audit_key())
    sms_settings = sms_settings or SmsSettings()
    provider = sms_provider or build_provider(sms_settings)
    handover_policy = policy.from_settings(settings)
    dispatcher = SmsDispatcher.from_settings(
        engine,
        provider,
        sms_settings,
        master_secret=settings.master_key,
        digits=settings.code_digits,
        obsolete=sms_relevance.why_obsolete,
        on_status=outbox.audit_status,
    )
    webhook_dispatcher = WebhookDispatcher(
        engine,
        master_secret=settings.master_key,
        digits=settings.code_digits,
        max_attempts=settings.webhook_max_attempts,
        backoff_base_seconds=settings.webhook_backoff_base_seconds,
        backoff_max_seconds=settings.webhook_backoff_max_seconds,
        max_age_seconds=settings.webhook_max_age_hours * 3600,
        timeout_seconds=settings.webhook_timeout_seconds,
        service_clock=clock,
    )
    scheduler = Scheduler(
        engine, handover_policy, [timedelta(hours=h) for h in settings.reminder_hours], clock
    )
    metrics = CloudMetrics(CollectorRegistry(), settings.metrics_locker_labels)
    bridge = (
        CloudBridge(settings, engine, handover_policy=handover_policy, clock=clock, metrics=metrics)
        if settings.mqtt_url
        else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(bootstrap.ensure_first_admin, engine, settings)
        stop = asyncio.Event()
        tasks = []
        if settings.run_background:
            tasks = [
                asyncio.create_task(
                    dispatcher.run_forever(stop, settings.sms_interval_seconds),
                    name="sms-dispatcher",
                ),
                asyncio.create_task(
                    scheduler.run_forever(stop, settings.scheduler_interval_seconds),
                    name="scheduler",
                ),
                asyncio.create_task(
                    webhook_dispatcher.run_forever(stop, settings.webhook_interval_seconds),
                    name="webhook-dispatcher",
                ),
            ]
            if settings.audit_checkpoint_file:
                tasks.append(
                    asyncio.create_task(
                        audit_trail.checkpoint_forever(
                            engine,
                            Path(settings.audit_checkpoint_file),
                            stop,
                            settings.audit_checkpoint_seconds,
                        ),
                        name="audit-checkpoints",
                    )
                )
        if bridge is not None:
            bridge.start()
        try:
            yield
        finally:
            if bridge is not None:
                await asyncio.to_thread(bridge.stop)
            stop.set()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            provider.close()
            webhook_dispatcher.close()
            engine.dispose()

    app = FastAPI(
        title="Xinbao cloud API",
        summary="Approval records, lockers, drop-off and pickup codes, staff, audit trail.",
        version="1",
        lifespan=lifespan,
        # FastAPI's /docs and /redoc load their scripts from a CDN; web/api_docs.py serves
        # /docs from the package instead.
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(refuse_repeated_query)],
    )
    # Every response: CSP (this origin only), no framing, no sniffing, no referrer.
    app.add_middleware(SecurityHeaders)
    app.state.settings = settings
    app.state.engine = engine
    app.state.read_engine = reading(engine)
    app.state.clock = clock
    app.state.policy = handover_policy
    app.state.scheduler = scheduler
    app.state.dispatcher = dispatcher
    app.state.webhooks = webhook_dispatcher
    app.state.bridge = bridge
    app.state.metrics = metrics
    problems.install(app)
    if settings.bench_routes:
        # First, where the read routes it stands for are matched (/api/v1/lockers/{id} in
        # ~15 us); behind the staff, SMS and web routers matching it alone took ~110 us.
        app.include_router(bench.router)
    for module in (records, lockers, handovers, audit, monitoring, staff_records, webhooks):
        app.include_router(module.router)
    # Routers that do not declare their own particular problems (docs/api.md lists them).
    app.include_router(staff.router, responses=problems.problem_responses(401, 404, 409, 429))
    app.include_router(sms_outbox.router, responses=problems.problem_responses(409))
    app.include_router(staff.keys_router, responses=problems.problem_responses(409))
    mount_sms(
        app,
        SmsContext(
            engine=engine,
            settings=sms_settings,
            provider=provider,
            on_status=outbox.audit_status,
        ),
        staff_dependencies=[Depends(get_current_staff)],
        admin_dependencies=[Depends(get_current_admin)],
    )
    mount_web(app)
    mount_docs(app)
    # Added last, so the request timer is the outermost middleware and sees every answer.
    mount_metrics(app, metrics, settings, engine, clock)
    problems.declare_problems(app)
    return app
