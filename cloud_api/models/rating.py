"""Applicants' satisfaction ratings (满意度评价), one per collected pickup (docs/ratings.md).

The scale is five stars (``stars5``: 1 very poor .. 5 very good). ``scale`` is stored with
every rating so that another scale can be added later without guessing what old rows meant;
the three-level 好/中/差 view used by government service reviews is derived, never stored:
4-5 好 good, 3 中 fair, 1-2 差 poor (``level``).
"""

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from cloud_api.models.common import UtcDateTime, utcnow


class RatingScale(StrEnum):
    stars5 = "stars5"


SCALE = RatingScale.stars5
SCORES = range(1, 6)
COMMENT_MAX = 500


def level(score: int) -> str:
    """The 好/中/差 level of a five-star score: good (4-5), fair (3), poor (1-2)."""
    return "good" if score >= 4 else "fair" if score == 3 else "poor"


class Rating(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    # Unique: the database itself refuses a second rating of a handover, so two submits that
    # race (two taps, two tabs) leave exactly one.
    handover_id: int = Field(foreign_key="handover.id", unique=True)
    record_id: int = Field(foreign_key="approval_record.id")
    locker_id: str = Field(foreign_key="locker.id", max_length=64)
    score: int
    scale: str = Field(max_length=16)
    comment: str | None = Field(default=None, sa_column=Column(Text(), nullable=True))
    submitted_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False, index=True)
    )


class RatingWeek(SQLModel):
    """One site's ratings in one week (Monday 00:00 China time onwards)."""

    site: str
    week_start: date
    count: int
    average: float
    # Ratings per score, "1".."5" (all five keys, zeros included), and per 好/中/差 level.
    distribution: dict[str, int]
    levels: dict[str, int]


class RatingComment(SQLModel):
    id: int
    site: str
    locker_id: str
    handover_id: int
    application_number: str
    score: int
    comment: str
    submitted_at: datetime


class RatingSummary(SQLModel):
    scale: str
    weeks: int
    since: datetime
    sites: list[str] | None  # the sites shown (None: every site)
    groups: list[RatingWeek]  # newest week first, then by site
    comments: list[RatingComment]  # newest first
