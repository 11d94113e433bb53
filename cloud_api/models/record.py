"""Approval records, as the approval system (审批系统) sends them."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column
from sqlmodel import Field, SQLModel

from cloud_api.models.common import (
    ApplicationNumber,
    LongText,
    Mobile,
    ShortText,
    UtcDateTime,
    utcnow,
)


class RecordStatus(StrEnum):
    submitted = "submitted"
    prereview_passed = "prereview_passed"
    documents_in_locker = "documents_in_locker"
    documents_received = "documents_received"
    approved = "approved"
    licence_in_locker = "licence_in_locker"
    collected = "collected"
    rejected = "rejected"
    withdrawn = "withdrawn"


class InitialStatus(StrEnum):
    """The states a record may be created in (after pre-review at the latest)."""

    submitted = "submitted"
    prereview_passed = "prereview_passed"


class RecordBase(SQLModel):
    applicant_name: ShortText
    mobile: Mobile = Field(description="E.164, e.g. +8613800138000")
    matter_name: LongText


class ApprovalRecord(RecordBase, table=True):
    __tablename__ = "approval_record"

    id: int | None = Field(default=None, primary_key=True)
    application_number: str = Field(max_length=64, unique=True)
    applicant_name: str = Field(max_length=200)
    mobile: str = Field(max_length=20)
    matter_name: str = Field(max_length=500)
    status: str = Field(default=RecordStatus.submitted.value, max_length=32)
    # The credential that created it ("api_key:3", "staff:li"): an integrator sees only the
    # records its key created, unless the key has the records:read:all scope.
    created_by: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )


class RecordCreate(RecordBase):
    application_number: ApplicationNumber
    status: InitialStatus = InitialStatus.submitted


class RecordUpdate(RecordBase):
    pass


class RecordTransition(SQLModel):
    status: RecordStatus
    reason: LongText | None = None


class RecordPublic(RecordBase):
    id: int
    application_number: str
    status: str
    created_at: datetime
    updated_at: datetime
