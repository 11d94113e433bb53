"""Handovers: one use of one compartment, a drop-off or a pickup (DESIGN.md section 3)."""

from datetime import datetime
from enum import StrEnum

from pydantic import ConfigDict, model_validator
from sqlalchemy import Column, Index
from sqlmodel import Field, SQLModel

from cloud_api.models.common import (
    ApplicationNumber,
    Latitude,
    LockerId,
    Longitude,
    UtcDateTime,
    utcnow,
)
from cloud_api.models.locker import CompartmentSize


class HandoverKind(StrEnum):
    dropoff = "dropoff"
    pickup = "pickup"


class HandoverState(StrEnum):
    reserved = "reserved"
    deposited = "deposited"
    collected = "collected"
    expired = "expired"
    overdue = "overdue"
    recovered = "recovered"
    cancelled = "cancelled"


#: States in which the handover holds its compartment (and its code may be live).
ACTIVE_STATES = (HandoverState.reserved, HandoverState.deposited, HandoverState.overdue)


def _utc(nullable: bool = True) -> Column:
    return Column(UtcDateTime(), nullable=nullable)


class Handover(SQLModel, table=True):
    __table_args__ = (Index("ix_handover_locker_code", "locker_id", "code_digest"),)

    id: int | None = Field(default=None, primary_key=True)
    # Public reference for applicants (resend): unguessable, unlike the id.
    ref: str = Field(max_length=32, unique=True)
    kind: str = Field(max_length=16)
    state: str = Field(max_length=16, index=True)
    record_id: int = Field(foreign_key="approval_record.id", index=True)
    locker_id: str = Field(foreign_key="locker.id", max_length=64)
    compartment_id: int = Field(foreign_key="compartment.id")
    # The HOTP counter of the live code and a keyed digest of it; never the code (codes.md).
    code_counter: int | None = Field(default=None)
    code_digest: str | None = Field(default=None, max_length=64)
    code_redeemed_at: datetime | None = Field(default=None, sa_column=_utc())
    code_sent_at: datetime | None = Field(default=None, sa_column=_utc())
    resend_count: int = Field(default=0)
    reminders_sent: int = Field(default=0)
    expires_at: datetime = Field(sa_column=_utc(False))
    created_by: str = Field(max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc(False))
    deposited_at: datetime | None = Field(default=None, sa_column=_utc())
    finished_at: datetime | None = Field(default=None, sa_column=_utc())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc(False))


class DropoffRequest(SQLModel):
    # The rule of _where below, in the OpenAPI document: a locker, or a position.
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["locker_id"],
                    "properties": {
                        "locker_id": {"type": "string"},
                        "latitude": {"type": "null"},
                        "longitude": {"type": "null"},
                    },
                },
                {
                    "required": ["latitude", "longitude"],
                    "properties": {
                        "latitude": {"type": "number"},
                        "longitude": {"type": "number"},
                        "locker_id": {"type": "null"},
                    },
                },
            ]
        }
    )

    application_number: ApplicationNumber
    size: CompartmentSize = CompartmentSize.M
    locker_id: LockerId | None = None
    latitude: Latitude | None = None
    longitude: Longitude | None = None

    @model_validator(mode="after")
    def _where(self):
        near = self.latitude is not None or self.longitude is not None
        if self.locker_id is None and (self.latitude is None or self.longitude is None):
            raise ValueError("give locker_id, or latitude and longitude for the nearest locker")
        if self.locker_id is not None and near:
            raise ValueError("give locker_id or latitude/longitude, not both")
        return self


class LoadRequest(SQLModel):
    application_number: ApplicationNumber
    locker_id: LockerId
    size: CompartmentSize = CompartmentSize.M


class ResendRequest(SQLModel):
    mobile: str = Field(min_length=1, max_length=30)


class HandoverPublic(SQLModel):
    id: int
    ref: str
    kind: str
    state: str
    application_number: str
    locker_id: str
    compartment_number: int
    code_counter: int | None
    expires_at: datetime
    created_at: datetime
    deposited_at: datetime | None
    finished_at: datetime | None


class CodeCheck(SQLModel):
    code: str = Field(min_length=1, max_length=32)
    # During a lockout: the last 4 digits of the mobile the code was sent to.
    mobile_last4: str | None = Field(default=None, regex=r"^[0-9]{4}$")


class CodeCheckResult(SQLModel):
    accepted: bool
    handover_id: int | None = None
    kind: str | None = None
    compartment_number: int | None = None
    board: int | None = None
    channel: int | None = None
    attempts_left: int | None = None
