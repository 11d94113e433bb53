"""Requests for a new opening code: the applicant at a kiosk (lost code) or staff on the
dashboard (resend). One row per request the limits count (docs/codes.md "Lost codes")."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, Index
from sqlmodel import Field, SQLModel

from cloud_api.models.common import UtcDateTime
from cloud_api.models.handover import HandoverPublic


class ReissueVia(StrEnum):
    kiosk = "kiosk"
    dashboard = "dashboard"


class ReissueOutcome(StrEnum):
    reissued = "reissued"
    # Declined: the kiosk answers exactly as for "reissued" (no oracle for records).
    unknown_record = "unknown_record"
    no_live_handover = "no_live_handover"  # the record has no code out at any locker
    not_at_this_locker = "not_at_this_locker"  # ... only at another locker
    mobile_mismatch = "mobile_mismatch"
    stale = "stale"  # the cabinet sent it long after it was typed (an outage)
    # Over a limit: one row per window, ``refused`` counts the requests it turned away.
    limited_locker = "limited_locker"
    limited_record = "limited_record"


# What a record's daily limit counts: requests that could have issued a code there.
COUNTED_FOR_RECORD = (ReissueOutcome.reissued.value, ReissueOutcome.mobile_mismatch.value)
LIMITED = (ReissueOutcome.limited_locker.value, ReissueOutcome.limited_record.value)


class CodeReissue(SQLModel, table=True):
    __tablename__ = "code_reissue"
    __table_args__ = (
        Index("ix_code_reissue_locker_at", "locker_id", "at"),
        Index("ix_code_reissue_record_at", "record_id", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    via: str = Field(max_length=16)
    # The kiosk's locker; for the dashboard, the handover's.
    locker_id: str | None = Field(default=None, foreign_key="locker.id", max_length=64)
    record_id: int | None = Field(default=None, foreign_key="approval_record.id")
    handover_id: int | None = Field(default=None, foreign_key="handover.id")
    outcome: str = Field(max_length=32)
    refused: int = Field(default=0)
    actor: str = Field(max_length=100)
    # The locker event that carried a kiosk request.
    event_id: str | None = Field(default=None, max_length=36)


class CodeResent(SQLModel):
    """What staff see after a resend: where the new code went and what to tell the caller."""

    application_number: str
    sent_to: str  # the mobile, masked (+86138****8000)
    handovers: list[HandoverPublic]
    message_zh: str
    message_en: str
