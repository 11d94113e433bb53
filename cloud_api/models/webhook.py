"""Webhooks for integrators (docs/integrators.md): subscribers, the event outbox, and the
record of codes handed to an integrator's personal centre.

A subscriber belongs to one integrator API key and sees what that key may read: events of
the records the key created (every record with ``records:read:all``). Its signing secret is
not stored: the row holds a random salt, and the secret is an HMAC of it under the master
secret, computed when it is shown (once) and when an event is signed. A database reader can
therefore not forge events.

An event row is written in the transaction of the audit entry it comes from
(``cloud_api.webhooks.events``) and never holds a code: a ``code.issued`` event holds the
locker and HOTP counter, and the code is computed in memory when the event is sent, as the SMS
outbox does.
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field as PydanticField
from pydantic import StringConstraints, WithJsonSchema
from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from cloud_api.models.common import ShortText, UtcDateTime, utcnow
from cloud_api.webhooks.urls import MAX_URL_LENGTH, URL_PATTERN


def _utc(nullable: bool = True) -> Column:
    return Column(UtcDateTime(), nullable=nullable)


class WebhookSubscriber(SQLModel, table=True):
    __tablename__ = "webhook_subscriber"

    id: int | None = Field(default=None, primary_key=True)
    api_key_id: int = Field(foreign_key="api_key.id", index=True)
    name: str = Field(max_length=200)
    url: str = Field(max_length=2000)
    # The secret is HMAC(master secret, salt): only the salt is stored (see the module text).
    secret_salt: str = Field(max_length=64)
    # The code.issued event carries the code itself (the key needs codes:read).
    include_codes: bool = Field(default=False)
    active: bool = Field(default=True)
    created_by: str = Field(max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc(False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc(False))


class WebhookEventStatus(StrEnum):
    pending = "pending"  # waiting for its (next) attempt, or for an earlier event of its record
    sending = "sending"  # claimed by a delivery worker; the POST may be in flight
    delivered = "delivered"  # the subscriber answered 2xx
    dead = "dead"  # given up (attempts, age, subscriber or key gone): staff may replay it


#: Events that hold back the later events of their record for the same subscriber.
UNDELIVERED = (WebhookEventStatus.pending.value, WebhookEventStatus.sending.value)


class WebhookEvent(SQLModel, table=True):
    __tablename__ = "webhook_event"
    __table_args__ = (
        # The claim's "is an earlier event of this record still undelivered?" look-up.
        Index("ix_webhook_event_stream", "subscriber_id", "record_id", "id"),
        Index("ix_webhook_event_due", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # What the subscriber dedupes on: the same on every attempt and on a replay.
    event_id: str = Field(max_length=36, unique=True)
    subscriber_id: int = Field(foreign_key="webhook_subscriber.id")
    record_id: int = Field(foreign_key="approval_record.id")
    type: str = Field(max_length=64)
    # The audit entry it was derived from (the per-record order follows it).
    audit_seq: int
    occurred_at: datetime = Field(sa_column=_utc(False))
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default=WebhookEventStatus.pending.value, max_length=16)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_column=_utc(False))
    claimed_until: datetime | None = Field(default=None, sa_column=_utc())
    # The maximum age counts from here: when the event was queued, or last replayed.
    queued_at: datetime = Field(default_factory=utcnow, sa_column=_utc(False))
    delivered_at: datetime | None = Field(default=None, sa_column=_utc())
    dead_at: datetime | None = Field(default=None, sa_column=_utc())
    last_status_code: int | None = Field(default=None)
    last_error: str | None = Field(default=None, max_length=500)
    replays: int = Field(default=0)


class CodeFetch(SQLModel, table=True):
    """A live code handed to an integrator (``GET /api/v1/handovers/{id}/code``): once per
    issued code, whoever asks."""

    __tablename__ = "code_fetch"
    __table_args__ = (UniqueConstraint("handover_id", "counter", name="uq_code_fetch_issue"),)

    id: int | None = Field(default=None, primary_key=True)
    handover_id: int = Field(foreign_key="handover.id")
    counter: int
    fetched_by: str = Field(max_length=100)
    fetched_at: datetime = Field(default_factory=utcnow, sa_column=_utc(False))


# --- API shapes ------------------------------------------------------------------------------

# Checked by cloud_api.webhooks.urls.check_url, which refuses with a reason in words (so the
# pattern is published, not enforced here).
WebhookUrl = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_URL_LENGTH),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_URL_LENGTH,
            "pattern": URL_PATTERN,
            "description": "http:// or https:// (docs/integrators.md)",
        }
    ),
]


class SubscriberCreate(SQLModel):
    api_key_id: int = PydanticField(ge=1, le=2**31 - 1, description="the integrator's API key")
    name: ShortText
    url: WebhookUrl
    include_codes: bool = PydanticField(
        default=False, description="code.issued carries the code (the key needs codes:read)"
    )


class SubscriberUpdate(SQLModel):
    name: ShortText | None = None
    url: WebhookUrl | None = None
    include_codes: bool | None = None
    active: bool | None = None


class SubscriberPublic(SQLModel):
    id: int
    api_key_id: int
    name: str
    url: str
    include_codes: bool
    active: bool
    created_by: str
    created_at: datetime
    updated_at: datetime


class SubscriberIssued(SubscriberPublic):
    secret: str = PydanticField(description="the signing secret: shown only in this answer")


class WebhookEventPublic(SQLModel):
    id: int
    event_id: str
    subscriber_id: int
    type: str
    application_number: str | None = None
    audit_seq: int
    occurred_at: datetime
    status: str
    attempts: int
    next_attempt_at: datetime
    queued_at: datetime
    delivered_at: datetime | None
    dead_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    replays: int


class CodeRelease(SQLModel):
    handover_id: int
    application_number: str
    kind: str
    locker_id: str
    counter: int
    code: str = PydanticField(description="the live code: this answer is the only time it is given")
    expires_at: datetime
