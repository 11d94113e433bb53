"""What the cloud learns from its lockers over MQTT: link state, ingested events, alarms, and
the commands it sent with their replies (cloud_api.mqtt writes these tables)."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index
from sqlmodel import Field, SQLModel

from cloud_api.models.common import UtcDateTime, utcnow


def _utc(nullable: bool = True) -> Column:
    return Column(UtcDateTime(), nullable=nullable)


class LockerLink(SQLModel, table=True):
    """The last known presence and telemetry of one locker."""

    __tablename__ = "locker_link"

    locker_id: str = Field(foreign_key="locker.id", primary_key=True, max_length=64)
    online: bool = Field(default=False)
    presence_at: datetime | None = Field(default=None, sa_column=_utc())
    last_seen_at: datetime | None = Field(default=None, sa_column=_utc())
    telemetry_at: datetime | None = Field(default=None, sa_column=_utc())
    outbox_depth: int | None = Field(default=None)
    version: str | None = Field(default=None, max_length=64)
    uptime_s: float | None = Field(default=None)
    boards: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON()))
    last_seq: int = Field(default=0, sa_column=Column(BigInteger(), nullable=False, default=0))
    # What the cloud holds of the locker's events, told to the locker in each full sync so it
    # can send again what a broker acknowledged and lost: every seq from 1 to stored_upto
    # (event stored_upto_event) is stored, counting rows from id stored_from_id on (where the
    # locker's current numbering starts: a wiped controller counts from 1 again).
    stored_upto: int = Field(
        default=0, sa_column=Column(BigInteger(), nullable=False, default=0, server_default="0")
    )
    stored_upto_event: str | None = Field(default=None, max_length=36)
    stored_from_id: int = Field(
        default=0, sa_column=Column(BigInteger(), nullable=False, default=0, server_default="0")
    )


class LockerEventRecord(SQLModel, table=True):
    """Every event a locker sent, once: the unique event_id is what makes redelivery harmless."""

    __tablename__ = "locker_event"
    __table_args__ = (Index("ix_locker_event_locker_seq", "locker_id", "seq"),)

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=36, unique=True)
    locker_id: str = Field(foreign_key="locker.id", max_length=64)
    seq: int = Field(sa_column=Column(BigInteger(), nullable=False))
    ts: datetime = Field(sa_column=_utc(False))
    type: str = Field(max_length=32)
    compartment: int | None = Field(default=None)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON()))
    received_at: datetime = Field(default_factory=utcnow, sa_column=_utc(False))
    # Which API process applied it (several split the load over the shared subscription).
    received_by: str = Field(max_length=64)
    # "applied", "stored" (nothing to apply) or "ignored: why" / "refused: why".
    outcome: str = Field(default="stored", max_length=300)


class AlarmKind(StrEnum):
    door_left_open = "door_left_open"
    door_forced = "door_forced"
    door_jammed = "door_jammed"
    board_unreachable = "board_unreachable"
    locker_offline = "locker_offline"
    # The cloud had an item's compartment wrong and moved it to the cabinet's (effects.py).
    placement = "placement"
    # A pickup or staff collect whose door closed with the sensor still seeing an item.
    item_still_inside = "item_still_inside"
    # The cabinet's view (reply to a full sync) differs from the cloud's (mqtt/reconcile.py).
    mismatch = "mismatch"
    # The locker's account sent more messages than its ingest budget (mqtt/intake.py): the
    # excess was counted, not applied. Staff look (a hostile account, a faulty controller).
    flooding = "flooding"
    # Keypad or staff log-in guesses reached the second lockout level (xinbao/lockout.py).
    lockout = "lockout"


class Alarm(SQLModel, table=True):
    __table_args__ = (Index("ix_alarm_open", "locker_id", "kind", "cleared_at"),)

    id: int | None = Field(default=None, primary_key=True)
    locker_id: str = Field(foreign_key="locker.id", max_length=64)
    compartment: int | None = Field(default=None)
    kind: str = Field(max_length=32)
    raised_at: datetime = Field(sa_column=_utc(False))
    # The event seq that raised it: a clearing event with a higher seq that was applied first
    # (events of one locker can reach two API processes out of order) wins.
    raised_seq: int | None = Field(default=None, sa_column=Column(BigInteger()))
    cleared_at: datetime | None = Field(default=None, sa_column=_utc())
    acked_at: datetime | None = Field(default=None, sa_column=_utc())
    acked_by: str | None = Field(default=None, max_length=100)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON()))


class AlarmPublic(SQLModel):
    id: int
    locker_id: str
    compartment: int | None
    kind: str
    raised_at: datetime
    cleared_at: datetime | None
    acked_at: datetime | None
    acked_by: str | None
    data: dict[str, Any]


class LockerCommand(SQLModel, table=True):
    """A signed command sent to a locker; any API process may receive its reply."""

    __tablename__ = "locker_command"

    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(max_length=36, unique=True)
    locker_id: str = Field(foreign_key="locker.id", max_length=64, index=True)
    type: str = Field(max_length=32)
    issued_at: datetime = Field(sa_column=_utc(False))
    expires_at: datetime = Field(sa_column=_utc(False))
    # sent -> ok | failed (the reply), or timeout (nobody answered in time)
    status: str = Field(default="sent", max_length=16)
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON()))
    error: str | None = Field(default=None, max_length=300)
    replied_at: datetime | None = Field(default=None, sa_column=_utc())
    remote_open_id: int | None = Field(default=None, foreign_key="remote_open_request.id")


class LockerEventPublic(SQLModel):
    event_id: str
    seq: int
    ts: datetime
    type: str
    compartment: int | None
    data: dict[str, Any]
    received_at: datetime
    outcome: str
