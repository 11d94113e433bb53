"""The SMS outbox table: one row per message the system owes an applicant.

A row never holds a code. It holds the locker id and HOTP counter instead, and the dispatcher
renders the body (code included) only in memory, at send time (DESIGN.md section 6).

Times are timezone-aware UTC in Python and ``DateTime(timezone=True)`` in the database.
PostgreSQL keeps them as ``timestamptz``; SQLite keeps the UTC wall clock without an offset,
so values read back from SQLite are naive: ``as_utc`` puts the UTC zone back.
"""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import field_validator
from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """The same instant as an aware UTC datetime (SQLite hands back naive UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class SmsStatus(StrEnum):
    pending = "pending"  # waiting for its next attempt
    sending = "sending"  # claimed by a dispatcher; the provider call may be in flight
    sent = "sent"  # the provider accepted it (we hold its sid)
    delivered = "delivered"  # the carrier confirmed delivery (status callback)
    # The provider refused this message (e.g. an invalid number), or gave up on it after
    # accepting it (status callback).
    failed = "failed"
    undelivered = "undelivered"  # the carrier could not deliver it (status callback)
    dead = "dead"  # we gave up: too many counted failures, or the message cannot be rendered
    # Not sent because it no longer applies: its handover ended or its code was replaced
    # (a resend) before the dispatcher got to it. Sending it would hand out a dead code.
    superseded = "superseded"


#: States staff may send again (outbox.requeue).
REQUEUEABLE_STATUSES = frozenset({SmsStatus.dead, SmsStatus.failed, SmsStatus.undelivered})

#: States a delivery report may no longer change.
FINAL_STATUSES = frozenset(
    {SmsStatus.delivered, SmsStatus.failed, SmsStatus.undelivered, SmsStatus.superseded}
)


def _utc_column(*, nullable: bool, index: bool = False) -> Any:
    return Column(DateTime(timezone=True), nullable=nullable, index=index)


class SmsMessage(SQLModel, table=True):
    __tablename__ = "sms_message"

    id: int | None = Field(default=None, primary_key=True)
    # Caller-chosen key naming the event (e.g. "handover:42:pickup_code:c7"): a second enqueue
    # for the same event finds this row instead of sending a second SMS.
    dedupe_key: str = Field(max_length=200, unique=True)
    to_number: str = Field(max_length=20)
    template: str = Field(max_length=40)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    locker_id: str | None = Field(default=None, max_length=100)
    code_counter: int | None = Field(default=None)
    handover_id: int | None = Field(default=None, index=True)
    status: str = Field(default=SmsStatus.pending.value, max_length=16, index=True)
    # Every hand-over to the provider (a retry after one asks the provider first whether an
    # earlier one went through) ...
    attempts: int = Field(default=0)
    # ... and the failures among them that count toward max_attempts: not those of the provider
    # as a whole (credentials, 5xx, unreachable), since an outage must not kill every SMS, and
    # none from before a staff member requeued the message.
    failures: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    next_attempt_at: datetime = Field(
        default_factory=utcnow, sa_column=_utc_column(nullable=False, index=True)
    )
    claimed_until: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    provider: str | None = Field(default=None, max_length=20)
    provider_sid: str | None = Field(default=None, max_length=64, unique=True)
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=_utc_column(nullable=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc_column(nullable=False))


class SmsMessagePublic(SQLModel):
    """What staff see in the outbox listing. The body is not here: it would contain the code."""

    id: int
    dedupe_key: str
    to_number: str
    template: str
    locker_id: str | None
    handover_id: int | None
    status: str
    attempts: int
    failures: int = 0
    next_attempt_at: datetime
    provider: str | None
    provider_sid: str | None
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    updated_at: datetime

    @field_validator("next_attempt_at", "created_at", "sent_at", "updated_at", mode="after")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return as_utc(value)
