"""A lost opening code (忘记开箱码): the request the cabinet forwards, one rule for both sides.

At the kiosk the applicant types the application number and the last 4 digits of the mobile
the code went to. The cabinet forwards them to the cloud as a ``code_reissue_requested``
event (docs/mqtt.md); the cloud issues a new code by SMS when they match a live handover at
that cabinet (docs/codes.md "Lost codes"). The kiosk answers the same whatever the outcome.

The digits never travel or rest in the clear: the event carries a digest keyed with the
locker key (as the reservations' ``mobile_digest`` does), bound to the application number.
The cloud computes the same digest from the record's mobile with the key of the locker the
event came from, so a digest made for one cabinet matches nothing at another.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

from xinbao.lockout import well_formed_mobile_digits

# An application number as the approval system writes them (cloud_api.models.common uses
# the same pattern for its API).
APPLICATION_NUMBER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,63}$"
_APPLICATION_NUMBER = re.compile(APPLICATION_NUMBER_PATTERN)
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
# The event's data holds exactly these keys.
DATA_KEYS = frozenset({"application_no", "mobile_digest"})


class BadRequest(ValueError):
    """The request does not follow the rule; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def clean_application_number(typed: object) -> str:
    """The application number as typed, without surrounding blanks; BadRequest if it cannot
    be one (1-64 letters, digits, '_', '.', '/' or '-', starting with a letter or digit)."""
    if not isinstance(typed, str):
        raise BadRequest("application_no", "must be text")
    cleaned = typed.strip()
    if not _APPLICATION_NUMBER.match(cleaned):
        raise BadRequest("application_no", "must be 1-64 letters, digits, '_', '.', '/' or '-'")
    return cleaned


def request_digest(locker_key: bytes, application_number: str, last_digits: str) -> str:
    """Keyed digest of the mobile's last 4 digits, bound to the locker and the record."""
    message = f"xinbao-lost-code|{application_number}|{last_digits}".encode()
    return hmac.new(locker_key, message, hashlib.sha256).hexdigest()


def request_data(locker_key: bytes, typed_number: object, typed_digits: object) -> dict[str, str]:
    """The event data the cabinet sends for what was typed; BadRequest if malformed."""
    number = clean_application_number(typed_number)
    if not well_formed_mobile_digits(typed_digits):
        raise BadRequest("mobile_last4", "must be 4 digits")
    return {
        "application_no": number,
        "mobile_digest": request_digest(locker_key, number, typed_digits),
    }


def parse_request(data: Any) -> tuple[str, str]:
    """``(application_number, mobile_digest)`` of an event's data, checked strictly (a
    cabinet may be hostile): exactly the two keys, each well formed; BadRequest otherwise."""
    if not isinstance(data, dict):
        raise BadRequest("data", "must be an object")
    keys = set(data)
    if keys != DATA_KEYS:
        extra = sorted(str(k)[:32] for k in keys - DATA_KEYS)
        missing = sorted(DATA_KEYS - keys)
        said = f"unknown {extra}" if extra else f"missing {missing}"
        raise BadRequest("data", f"must hold exactly application_no and mobile_digest ({said})")
    number = data["application_no"]
    if not isinstance(number, str) or number != number.strip():
        raise BadRequest("application_no", "must be text without surrounding blanks")
    number = clean_application_number(number)
    digest = data["mobile_digest"]
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise BadRequest("mobile_digest", "must be 64 lowercase hex digits")
    return number, digest


def digest_matches(
    locker_key: bytes, application_number: str, last_digits: str | None, digest: str
) -> bool:
    """Whether ``digest`` was made for these digits (constant time)."""
    if last_digits is None or not well_formed_mobile_digits(last_digits):
        return False
    expected = request_digest(locker_key, application_number, last_digits)
    return hmac.compare_digest(expected, digest)
