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
from pydantic import AfterValidator, AllowInfNan, StringConstraints, WithJsonSchema
from sqlalchemy import DateTime
from sqlalchemy.types import TypeDecorator

from xinbao.contract import LOCKER_ID_RE
from xinbao.lost_code import APPLICATION_NUMBER_PATTERN

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


# The same rules in the OpenAPI document, so a client (or schemathesis) can tell a valid value
# from the schema alone: no control characters, and not only blanks (blanks are stripped).
# The blanks are spelt out: the server strips what Python calls whitespace, and a schema
# reader's \s may know fewer (JavaScript's lacks U+0085, which the fuzz test once sent alone).
_BLANK = r"\s\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_TEXT_PATTERN = rf"^[^\x00-\x1f\x7f]*[^{_BLANK}\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
ShortText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=_TEXT_PATTERN),
    AfterValidator(no_control),
]
LongText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=500, pattern=_TEXT_PATTERN),
    AfterValidator(no_control),
]
LockerId = Annotated[
    str,
    StringConstraints(max_length=64, pattern=LOCKER_ID_RE.pattern),
    AfterValidator(_locker_id),
]
# A mobile number as cloud_api.sms.outbox.normalise_number takes it: E.164 (+ and 8-15 digits),
# +86 followed by a Chinese mobile (1[3-9] and 9 digits), spaces and dashes anywhere.
_SEP = "[ -]*"
MOBILE_PATTERN = (
    rf"^{_SEP}\+{_SEP}(?:8{_SEP}6{_SEP}1{_SEP}[3-9](?:{_SEP}[0-9]){{9}}"
    rf"|[1-79](?:{_SEP}[0-9]){{7,14}}|8{_SEP}[0-57-9](?:{_SEP}[0-9]){{6,13}}){_SEP}$"
)
_MOBILE = re.compile(MOBILE_PATTERN)


def _mobile(value: str) -> str:
    if not _MOBILE.match(value):
        raise ValueError(
            f"{value[:40]!r} is not an international mobile number: use + and the country "
            "code, e.g. +8613800138000 (+86 is followed by 11 digits starting 1[3-9])"
        )
    return value


# The pattern is checked by _mobile (for a message a person understands) and published in
# the schema.
Mobile = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=40),
    AfterValidator(_mobile),
    WithJsonSchema({"type": "string", "maxLength": 40, "pattern": MOBILE_PATTERN}),
]
ApplicationNumber = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=64,
        # The kiosk's lost-code form checks the same (xinbao/lost_code.py).
        pattern=APPLICATION_NUMBER_PATTERN,
    ),
]
Latitude = Annotated[float, AllowInfNan(False), Ge(-90), Le(90)]
Longitude = Annotated[float, AllowInfNan(False), Ge(-180), Le(180)]
