"""Administrators' side of the webhooks: subscribers (one or more per integrator key), the
event outbox listing, and the replay of dead letters. Every change is audited.

A secret is returned only by ``create_subscriber`` and ``rotate_secret`` (shown once); the
stored salt never leaves this module (cloud_api.webhooks.signing).
"""

from sqlalchemy import select, update
from sqlmodel import Session

from cloud_api.errors import Conflict, NotFound
from cloud_api.models.common import utcnow
from cloud_api.models.record import ApprovalRecord
from cloud_api.models.staff import ApiKey, Scope
from cloud_api.models.webhook import (
    SubscriberCreate,
    SubscriberPublic,
    SubscriberUpdate,
    WebhookEvent,
    WebhookEventPublic,
    WebhookEventStatus,
    WebhookSubscriber,
)
from cloud_api.services import audit
from cloud_api.webhooks.signing import new_salt, subscriber_secret
from cloud_api.webhooks.urls import check_url


def public(subscriber: WebhookSubscriber) -> SubscriberPublic:
    return SubscriberPublic.model_validate(subscriber, from_attributes=True)


def _codes_need_scope(key: ApiKey) -> None:
    if Scope.codes_read.value not in key.scopes.split():
        error = Conflict(
            f"API key {key.id} lacks the scope 'codes:read': a subscriber receives codes only "
            "for a key allowed to read them"
        )
        error.extra = {
            "reason": "webhook-codes-scope",
            "message_zh": "该接口密钥没有 codes:read 权限，不能接收开箱码",
            "message_en": "this API key lacks codes:read, so its subscribers cannot receive codes",
        }
        raise error


def _live_key(session: Session, key_id: int) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"no API key {key_id}")
    if not key.active:
        raise Conflict(f"API key {key_id} is revoked: its subscribers would receive nothing")
    return key


def create_subscriber(
    session: Session, body: SubscriberCreate, actor: str, master_key: bytes
) -> tuple[WebhookSubscriber, str]:
    """A subscriber for an integrator key, and its secret (shown only now)."""
    url = check_url(body.url)
    key = _live_key(session, body.api_key_id)
    if body.include_codes:
        _codes_need_scope(key)
    now = utcnow()
    subscriber = WebhookSubscriber(
        api_key_id=key.id,
        name=body.name,
        url=url,
        secret_salt=new_salt(),
        include_codes=body.include_codes,
        active=True,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(subscriber)
    session.flush()
    audit.append(
        session,
        actor,
        "webhook.subscriber_created",
        f"webhook_subscriber:{subscriber.id}",
        {"api_key": key.id, "name": body.name, "url": url, "include_codes": body.include_codes},
    )
    session.commit()
    return subscriber, subscriber_secret(master_key, subscriber.secret_salt)


def _get(session: Session, subscriber_id: int, lock: bool = False) -> WebhookSubscriber:
    found = session.get(WebhookSubscriber, subscriber_id, with_for_update=lock)
    if found is None:
        raise NotFound(f"no webhook subscriber {subscriber_id}")
    return found


def get_subscriber(session: Session, subscriber_id: int) -> WebhookSubscriber:
    return _get(session, subscriber_id)


def list_subscribers(session: Session, offset: int, limit: int) -> list[WebhookSubscriber]:
    return list(
        session.scalars(
            select(WebhookSubscriber).order_by(WebhookSubscriber.id).offset(offset).limit(limit)
        )
    )


def update_subscriber(
    session: Session, subscriber_id: int, body: SubscriberUpdate, actor: str
) -> WebhookSubscriber:
    subscriber = _get(session, subscriber_id, lock=True)
    changes = {
        name: value
        for name, value in body.model_dump(exclude_unset=True).items()
        if value is not None and getattr(subscriber, name) != value
    }
    if "url" in changes:
        changes["url"] = check_url(changes["url"])
        if changes["url"] == subscriber.url:
            del changes["url"]
    key = session.get(ApiKey, subscriber.api_key_id)
    if changes.get("include_codes"):
        _codes_need_scope(key)
    if changes.get("active") and not key.active:
        raise Conflict(f"API key {key.id} is revoked: the subscriber cannot be enabled")
    if not changes:
        return subscriber
    for name, value in changes.items():
        setattr(subscriber, name, value)
    subscriber.updated_at = utcnow()
    audit.append(
        session,
        actor,
        "webhook.subscriber_updated",
        f"webhook_subscriber:{subscriber.id}",
        {name: value for name, value in changes.items()},
    )
    session.commit()
    return subscriber


def rotate_secret(
    session: Session, subscriber_id: int, actor: str, master_key: bytes
) -> tuple[WebhookSubscriber, str]:
    """A new secret (shown only now); the old one stops signing at once."""
    subscriber = _get(session, subscriber_id, lock=True)
    subscriber.secret_salt = new_salt()
    subscriber.updated_at = utcnow()
    audit.append(
        session,
        actor,
        "webhook.secret_rotated",
        f"webhook_subscriber:{subscriber.id}",
        {"name": subscriber.name},
    )
    session.commit()
    return subscriber, subscriber_secret(master_key, subscriber.secret_salt)


def list_events(
    session: Session,
    status: WebhookEventStatus | None,
    subscriber_id: int | None,
    limit: int,
    before_id: int | None,
) -> list[WebhookEventPublic]:
    """Newest first; page with ``before_id`` = the smallest id of the previous page."""
    query = (
        select(WebhookEvent, ApprovalRecord.application_number)
        .join(ApprovalRecord, ApprovalRecord.id == WebhookEvent.record_id)
        .order_by(WebhookEvent.id.desc())
        .limit(limit)
    )
    if status is not None:
        query = query.where(WebhookEvent.status == status.value)
    if subscriber_id is not None:
        query = query.where(WebhookEvent.subscriber_id == subscriber_id)
    if before_id is not None:
        query = query.where(WebhookEvent.id < before_id)
    return [
        WebhookEventPublic(
            **event.model_dump(exclude={"payload"}), application_number=application_number
        )
        for event, application_number in session.execute(query)
    ]


def event_public(session: Session, event: WebhookEvent) -> WebhookEventPublic:
    record = session.get(ApprovalRecord, event.record_id)
    return WebhookEventPublic(
        **event.model_dump(exclude={"payload"}),
        application_number=record.application_number if record else None,
    )


def replay(session: Session, event_pk: int, actor: str) -> WebhookEvent:
    """Queue a dead letter again, due now, with its attempts and age counted afresh and the
    same event id (a receiver that did get it after all dedupes it). Audited."""
    event = session.get(WebhookEvent, event_pk, with_for_update=True)
    if event is None:
        raise NotFound(f"no webhook event {event_pk}")
    if event.status != WebhookEventStatus.dead:
        raise Conflict(
            f"webhook event {event_pk} is '{event.status}': only a dead letter is replayed"
        )
    subscriber = session.get(WebhookSubscriber, event.subscriber_id)
    key = session.get(ApiKey, subscriber.api_key_id)
    if not subscriber.active or not key.active:
        raise Conflict(
            f"webhook subscriber {subscriber.id} is disabled or its API key revoked: enable it "
            "before replaying its events"
        )
    # The outbox's own clock (as the delivery worker's): not the request's.
    now = utcnow()
    session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_pk, WebhookEvent.status == WebhookEventStatus.dead.value)
        .values(
            status=WebhookEventStatus.pending.value,
            attempts=0,
            next_attempt_at=now,
            queued_at=now,
            claimed_until=None,
            dead_at=None,
            replays=WebhookEvent.replays + 1,
        )
        .execution_options(synchronize_session=False)
    )
    audit.append(
        session,
        actor,
        "webhook.replayed",
        f"webhook_event:{event_pk}",
        {
            "event_id": event.event_id,
            "type": event.type,
            "subscriber": event.subscriber_id,
            "last_error": event.last_error,
        },
    )
    session.commit()
    session.refresh(event)
    return event
