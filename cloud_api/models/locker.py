"""Lockers (cabinets at a site) and their compartments."""

from datetime import datetime
from enum import StrEnum

from pydantic import Field as PydanticField
from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from cloud_api.models.common import (
    Latitude,
    LockerId,
    Longitude,
    ShortText,
    UtcDateTime,
    utcnow,
)


class CompartmentSize(StrEnum):
    S = "S"
    M = "M"
    L = "L"


class CompartmentState(StrEnum):
    free = "free"
    reserved = "reserved"  # held for a handover whose item is not in yet
    occupied = "occupied"  # an item is inside


class LockerBase(SQLModel):
    site: ShortText
    address: ShortText
    latitude: Latitude
    longitude: Longitude


class Locker(LockerBase, table=True):
    id: str = Field(primary_key=True, max_length=64)
    site: str = Field(max_length=200)
    address: str = Field(max_length=200)
    # The locker's own credential for the API, stored as a digest (core.security).
    key_digest: str = Field(max_length=64)
    # Next HOTP counter for this locker's codes; only ever grows (docs/codes.md).
    next_code_counter: int = Field(default=0)
    # Brute-force guard: wrong codes since the last success or lockout, and the back-off level.
    failed_code_attempts: int = Field(default=0)
    lockout_level: int = Field(default=0)
    lockout_until: datetime | None = Field(default=None, sa_column=Column(UtcDateTime()))
    # The whole state of the shared lockout machine (xinbao/lockout.py) as JSON text (text:
    # queries take DISTINCT over lockers, which PostgreSQL's json type cannot compare); the
    # three columns above mirror it for readers.
    lockout_state: str | None = Field(default=None, sa_column=Column(Text()))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )


class CompartmentBase(SQLModel):
    number: int = Field(ge=1, le=999)
    size: CompartmentSize
    board: int = Field(ge=0, le=255, description="board address on the RS-485 bus")
    channel: int = Field(ge=1, le=255, description="lock channel on the board, from 1")


class Compartment(CompartmentBase, table=True):
    __table_args__ = (
        UniqueConstraint("locker_id", "number"),
        UniqueConstraint("locker_id", "board", "channel"),
    )

    id: int | None = Field(default=None, primary_key=True)
    locker_id: str = Field(foreign_key="locker.id", index=True, max_length=64)
    size: str = Field(max_length=1)
    state: str = Field(default=CompartmentState.free.value, max_length=16)
    out_of_service: bool = Field(default=False)
    handover_id: int | None = Field(default=None)


class CompartmentCreate(CompartmentBase):
    pass


class CompartmentUpdate(SQLModel):
    out_of_service: bool


class LockerCreate(LockerBase):
    id: LockerId
    compartments: list[CompartmentCreate] = PydanticField(min_length=1, max_length=200)


class CompartmentPublic(CompartmentBase):
    state: str
    out_of_service: bool


class Occupancy(SQLModel):
    size: str
    total: int
    free: int


class BoardHealth(SQLModel):
    bus: str
    address: int
    reachable: bool
    consecutive_timeouts: int


class LockerPublic(LockerBase):
    id: str
    locked_out_until: datetime | None = None
    occupancy: list[Occupancy] = []
    # From the locker's MQTT presence and telemetry (cloud_api.mqtt); never seen: offline.
    online: bool = False
    last_seen_at: datetime | None = None
    outbox_depth: int | None = None
    boards: list[BoardHealth] = []


class LockerDetail(LockerPublic):
    compartments: list[CompartmentPublic]


class LockerRegistered(LockerDetail):
    locker_key: str = PydanticField(description="the locker's API credential; shown only once")


class LockerNearby(LockerPublic):
    distance_km: float
