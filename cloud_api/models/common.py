"""Column types and field types shared by the models.

``UtcDateTime`` stores ``timestamptz`` on PostgreSQL and UTC wall-clock on SQLite, and always
hands back an aware UTC datetime, so services never compare naive with aware times.

The text types refuse NUL and control characters: PostgreSQL rejects NUL in text (a 500 if it
got that far) and a line break in an applicant's name would end up in an SMS.
"""

import re
from datetime import UTC, datetime
from typing import Annotated

from annotated_types import Ge, Le
from pydantic import AfterValidator, AllowInfNan, StringConstraints
from sqlalchemy import DateTime
from sqlalchemy.types import TypeDecorator

from xinbao.contract import LOCKER_ID_RE

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_INT = 2**31 - 1


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class UtcDateTime(TypeDecorator):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite has no time zones: store the UTC wall clock.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        return as_utc(value)


def no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters or line breaks")
    return value


def _locker_id(value: str) -> str:
    if not LOCKER_ID_RE.match(value):
        raise ValueError(
            "a locker id is 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return value


ShortText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(no_control),
]
LongText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=500),
    AfterValidator(no_control),
]
LockerId = Annotated[str, StringConstraints(max_length=64), AfterValidator(_locker_id)]
ApplicationNumber = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]*$"
    ),
]
Latitude = Annotated[float, AllowInfNan(False), Ge(-90), Le(90)]
Longitude = Annotated[float, AllowInfNan(False), Ge(-180), Le(180)]
