"""Adding SMS to the outbox inside the caller's transaction.

The row commits together with the state change that caused it (a handover deposited, a code
resent), or not at all: there is no SMS for a rolled-back reservation and no reservation
without its SMS. The dispatcher sends committed rows later.
"""

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud_api.sms.errors import SmsInputError
from cloud_api.sms.models import SmsMessage, SmsStatus, utcnow
from cloud_api.sms.templates import check_params, get_template

_E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")
# Mainland mobiles: 11 digits starting 1[3-9]; landlines cannot receive SMS.
_CN_MOBILE = re.compile(r"^\+861[3-9][0-9]{9}$")
_DEDUPE_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


def normalise_number(raw: Any) -> str:
    """The number in E.164 (``+`` and 8-15 digits); spaces and dashes are dropped."""
    if not isinstance(raw, str):
        raise SmsInputError("the mobile number must be text such as +8613800138000")
    number = re.sub(r"[\s-]", "", raw)
    if not _E164.match(number):
        raise SmsInputError(
            f"{raw!r} is not an international mobile number: use + and the country code, "
            "e.g. +8613800138000"
        )
    if number.startswith("+86") and not _CN_MOBILE.match(number):
        raise SmsInputError(
            f"{raw!r} is not a Chinese mobile number: +86 is followed by 11 digits starting 1[3-9]"
        )
    return number


def enqueue_sms(
    session: Session,
    *,
    dedupe_key: str,
    to_number: str,
    template: str,
    params: Mapping[str, Any],
    locker_id: str | None = None,
    code_counter: int | None = None,
    handover_id: int | None = None,
) -> SmsMessage:
    """Add a message to ``session`` (not committed) or return the one already there.

    ``dedupe_key`` names the event, so the same event never yields two messages: a second call
    returns the first row unchanged, even if it came from another process (the unique index
    makes one of two concurrent inserts fail at commit; the caller retries its transaction and
    then finds the row here).
    """
    if not isinstance(dedupe_key, str) or not _DEDUPE_KEY.match(dedupe_key):
        raise SmsInputError("dedupe_key must be 1-200 printable ASCII characters without spaces")
    # scalars(), not exec(): callers may hold a plain SQLAlchemy Session or a SQLModel one.
    existing = session.scalars(
        select(SmsMessage).where(SmsMessage.dedupe_key == dedupe_key)
    ).first()
    if existing is not None:
        return existing
    # Look in the session too: a caller may enqueue twice before its transaction flushes.
    for pending in session.new:
        if isinstance(pending, SmsMessage) and pending.dedupe_key == dedupe_key:
            return pending

    number = normalise_number(to_number)
    chosen = get_template(template)
    check_params(chosen, params)
    if chosen.needs_code:
        if not locker_id or code_counter is None:
            raise SmsInputError(
                f"template {template!r} shows a code: give locker_id and code_counter"
            )
        if isinstance(code_counter, bool) or not isinstance(code_counter, int) or code_counter < 0:
            raise SmsInputError("code_counter must be a whole number, 0 or more")

    now = utcnow()
    message = SmsMessage(
        dedupe_key=dedupe_key,
        to_number=number,
        template=template,
        # JSON column: times go in as ISO-8601 text, which the template reads back.
        params={k: v.isoformat() if isinstance(v, datetime) else v for k, v in params.items()},
        locker_id=locker_id,
        code_counter=code_counter,
        handover_id=handover_id,
        status=SmsStatus.pending.value,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(message)
    return message
