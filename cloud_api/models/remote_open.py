"""Remote door-open requests from staff, sent to the locker as a signed ``unlock`` command
(cloud_api.mqtt) and closed with the outcome of its reply."""

from datetime import datetime

from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from cloud_api.models.common import LockerId, LongText, UtcDateTime, utcnow


class RemoteOpenRequest(SQLModel, table=True):
    __tablename__ = "remote_open_request"

    id: int | None = Field(default=None, primary_key=True)
    locker_id: str = Field(foreign_key="locker.id", max_length=64, index=True)
    compartment_number: int
    staff_id: int = Field(foreign_key="staff.id")
    reason: str = Field(max_length=500)
    # pending -> sent -> opened | jammed | no_response | rejected | timeout
    status: str = Field(default="pending", max_length=16)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )
    request_id: str | None = Field(default=None, max_length=36)
    detail: str | None = Field(default=None, max_length=300)
    finished_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime()))


class RemoteOpenCreate(SQLModel):
    locker_id: LockerId
    compartment_number: int = Field(ge=1, le=999)
    reason: LongText


class RemoteOpenPublic(SQLModel):
    id: int
    locker_id: str
    compartment_number: int
    staff_id: int
    reason: str
    status: str
    created_at: datetime
    request_id: str | None = None
    detail: str | None = None
    finished_at: datetime | None = None
