"""Webhooks (docs/integrators.md): administrators manage subscribers and replay dead letters;
an integrator key with ``codes:read`` fetches a live code once (the personal centre).

A subscriber's secret appears in the answers of its creation and of a rotation, never again.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from cloud_api.api.deps import (
    CurrentAdmin,
    DbId,
    Limit,
    NowDep,
    Offset,
    Principal,
    SessionDep,
    SettingsDep,
    require,
    writes_on_read,
)
from cloud_api.api.problems import problem_responses
from cloud_api.errors import Forbidden
from cloud_api.models.common import MAX_INT
from cloud_api.models.staff import Scope
from cloud_api.models.webhook import (
    CodeRelease,
    SubscriberCreate,
    SubscriberIssued,
    SubscriberPublic,
    SubscriberUpdate,
    WebhookEventPublic,
    WebhookEventStatus,
)
from cloud_api.services import code_release
from cloud_api.services import webhooks as service

router = APIRouter(prefix="/api/v1", tags=["webhooks"])
CodesReader = Annotated[Principal, Depends(require(Scope.codes_read))]


def _issued(subscriber, secret: str) -> SubscriberIssued:
    return SubscriberIssued(**service.public(subscriber).model_dump(), secret=secret)


@router.post(
    "/webhooks/subscribers",
    response_model=SubscriberIssued,
    status_code=201,
    responses=problem_responses(404, 409),
)
def create_subscriber(
    body: SubscriberCreate, admin: CurrentAdmin, session: SessionDep, settings: SettingsDep
):
    """A subscriber for an integrator key: signed events of the records that key may read.
    The secret is shown only in this answer."""
    subscriber, secret = service.create_subscriber(
        session, body, f"staff:{admin.username}", settings.master_key
    )
    return _issued(subscriber, secret)


@router.get("/webhooks/subscribers", response_model=list[SubscriberPublic])
def list_subscribers(
    admin: CurrentAdmin, session: SessionDep, offset: Offset = 0, limit: Limit = 100
):
    return [service.public(s) for s in service.list_subscribers(session, offset, limit)]


@router.get(
    "/webhooks/subscribers/{subscriber_id}",
    response_model=SubscriberPublic,
    responses=problem_responses(404),
)
def get_subscriber(subscriber_id: DbId, admin: CurrentAdmin, session: SessionDep):
    return service.public(service.get_subscriber(session, subscriber_id))


@router.patch(
    "/webhooks/subscribers/{subscriber_id}",
    response_model=SubscriberPublic,
    responses=problem_responses(404, 409),
)
def update_subscriber(
    subscriber_id: DbId, body: SubscriberUpdate, admin: CurrentAdmin, session: SessionDep
):
    """Change the URL, name or ``include_codes``, or disable (``active: false``) and enable it;
    audited. A disabled subscriber's undelivered events become dead letters."""
    return service.public(
        service.update_subscriber(session, subscriber_id, body, f"staff:{admin.username}")
    )


@router.post(
    "/webhooks/subscribers/{subscriber_id}/rotate-secret",
    response_model=SubscriberIssued,
    responses=problem_responses(404),
)
def rotate_secret(
    subscriber_id: DbId, admin: CurrentAdmin, session: SessionDep, settings: SettingsDep
):
    """A new signing secret, shown only in this answer; the old one stops at once."""
    subscriber, secret = service.rotate_secret(
        session, subscriber_id, f"staff:{admin.username}", settings.master_key
    )
    return _issued(subscriber, secret)


@router.get("/webhooks/events", response_model=list[WebhookEventPublic])
def list_events(
    admin: CurrentAdmin,
    session: SessionDep,
    status: WebhookEventStatus | None = None,
    subscriber_id: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
    limit: Limit = 100,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
):
    """The event outbox, newest first (``status=dead``: the dead letters). Bodies are not
    shown: a code.issued body may carry a code when it is sent."""
    return service.list_events(session, status, subscriber_id, limit, before_id)


@router.post(
    "/webhooks/events/{event_pk}/replay",
    response_model=WebhookEventPublic,
    responses=problem_responses(404, 409),
)
def replay_event(event_pk: DbId, admin: CurrentAdmin, session: SessionDep):
    """Send a dead letter again (same event id, attempts and age afresh); audited."""
    event = service.replay(session, event_pk, f"staff:{admin.username}")
    return service.event_public(session, event)


@router.get(
    "/handovers/{handover_id}/code",
    response_model=CodeRelease,
    responses=problem_responses(404, 409),
)
@writes_on_read  # the fetch is audited and spends the code's one release
def fetch_code(
    handover_id: DbId,
    who: CodesReader,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    response: Response,
):
    """The live code of a handover, for the integrator's personal centre (``codes:read``):
    once per issued code (a second fetch is refused with 409), audited, only for records the
    key may read. Staff never fetch codes."""
    if who.staff is not None:
        raise Forbidden("codes are handed to an integrator's personal centre, not to staff")
    response.headers["Cache-Control"] = "no-store"
    return code_release.fetch_once(
        session,
        handover_id,
        who.name,
        who.owner(reading=True),
        settings.master_key,
        settings.code_digits,
        now,
    )
