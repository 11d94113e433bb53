"""SMS texts for applicants: plain Chinese first, then English, kept short.

A message in Chinese is sent as UCS-2: 70 characters fit one SMS, 67 per part once split, and
each part is billed and can arrive out of order. The bodies below stay within three parts with a
20-character locker name; ``segments`` counts them and the tests check it.

Params are validated twice: when the message is enqueued (so a caller's mistake fails in the
caller's request, with nothing stored) and again when the body is rendered. ``code`` is never a
param: the dispatcher passes it separately, computed from the locker and counter at send time.
Times are given as ISO-8601 strings (``*_at`` params) and shown in China Standard Time.
"""

import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from cloud_api.sms.errors import SmsInputError

# China has had no daylight saving time since 1991; a fixed offset needs no tz database.
CHINA_TIME = timezone(timedelta(hours=8), "CST")
CODE_FIELD = "code"
ENGLISH_SUFFIX = "_en"
SIGNATURE = "【信包箱】"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PHONE = re.compile(r"^\+?[0-9][0-9 -]{2,19}$")
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_URL = re.compile(r"^https?://[^\s]{1,200}$")


def _text(limit: int) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise ValueError("must be text")
        text = str(value).strip()
        if not text:
            raise ValueError("must not be empty")
        if len(text) > limit:
            raise ValueError(f"must be at most {limit} characters")
        if _CONTROL.search(text):
            raise ValueError("must not contain control characters or line breaks")
        return text

    return check


def _moment(value: Any) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("must be an ISO-8601 date and time") from None
    else:
        raise ValueError("must be an ISO-8601 date and time")
    if moment.tzinfo is None:
        raise ValueError("must carry a UTC offset (e.g. 2025-03-05T10:00:00+00:00)")
    return moment.astimezone(CHINA_TIME)


def _moment_zh(value: Any) -> str:
    local = _moment(value)
    return f"{local.month}月{local.day}日 {local:%H:%M}"


def _moment_en(value: Any) -> str:
    local = _moment(value)
    # Month names spelled out here: %b follows the process locale.
    return f"{local.day} {_MONTHS[local.month - 1]} {local:%H:%M}"


def _phone(value: Any) -> str:
    text = _text(20)(value)
    if not _PHONE.match(text):
        raise ValueError("must be a telephone number")
    return text


def _url(value: Any) -> str:
    text = _text(200)(value)
    if not _URL.match(text):
        raise ValueError("must be an http(s) URL without spaces")
    return text


_PARAM_CHECKS: dict[str, Callable[[Any], str]] = {
    "locker_name": _text(30),
    "application_number": _text(64),
    "compartment": _text(6),
    "deposited_at": _moment_zh,
    "expires_at": _moment_zh,
    "service_phone": _phone,
    "rating_url": _url,
}

_ENGLISH_FORMS: dict[str, Callable[[Any], str]] = {
    "expires_at": _moment_en,
    "deposited_at": _moment_en,
}


@dataclass(frozen=True)
class SmsTemplate:
    name: str
    text: str

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(f for _, f, _, _ in string.Formatter().parse(self.text) if f)

    @property
    def needs_code(self) -> bool:
        return CODE_FIELD in self.fields

    @property
    def params(self) -> frozenset[str]:
        """The params a caller supplies (``x_en`` is the English rendering of param ``x``)."""
        return frozenset(f.removesuffix(ENGLISH_SUFFIX) for f in self.fields if f != CODE_FIELD)


TEMPLATES: dict[str, SmsTemplate] = {
    t.name: t
    for t in (
        SmsTemplate(
            "dropoff_code",
            SIGNATURE + "投件开箱码{code}，请在{expires_at}前到{locker_name}投放材料。"
            "Drop-off code {code} at {locker_name}, use before {expires_at_en}.",
        ),
        SmsTemplate(
            "pickup_code",
            SIGNATURE + "您的证照已放入{locker_name}，取件码{code}，请在{expires_at}前取件。"
            "Your licence is at {locker_name}. Pickup code {code}, valid until {expires_at_en}.",
        ),
        # A new code for a lost one (the kiosk, or staff on the dashboard): the old code
        # stopped working when this one was issued.
        SmsTemplate(
            "dropoff_code_new",
            SIGNATURE + "新投件开箱码{code}，原码已失效，请在{expires_at}前到{locker_name}投放。"
            "New drop-off code {code} (old one void) at {locker_name}, use by {expires_at_en}.",
        ),
        SmsTemplate(
            "pickup_code_new",
            SIGNATURE + "新取件码{code}，原码已失效，请在{expires_at}前到{locker_name}取件。"
            "New pickup code {code} (old one void) at {locker_name}, valid until {expires_at_en}.",
        ),
        SmsTemplate(
            "reminder",
            SIGNATURE + "提醒：您在{locker_name}有待取证照，取件码{code}，请在{expires_at}前取件。"
            "Reminder: collect your licence at {locker_name} with code {code} by {expires_at_en}.",
        ),
        SmsTemplate(
            "overdue",
            SIGNATURE + "您在{locker_name}的证照已超过保管期，请尽快取件或致电{service_phone}。"
            "Your licence at {locker_name} is overdue. Collect it soon or call {service_phone}.",
        ),
        SmsTemplate(
            "dropoff_receipt",
            SIGNATURE + "您的材料已于{deposited_at}投入{locker_name}{compartment}号箱，受理号"
            "{application_number}，审核结果另行短信通知。Documents for {application_number} "
            "are in box {compartment}, {deposited_at_en}; the result comes by SMS.",
        ),
        SmsTemplate(
            "receipt",
            SIGNATURE + "您已取件，感谢使用。Collected, thank you. "
            "满意度评价 Rate our service: {rating_url}",
        ),
    )
}


def get_template(name: str) -> SmsTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        known = ", ".join(sorted(TEMPLATES))
        raise SmsInputError(f"unknown SMS template {name!r}; known: {known}") from None


def check_params(template: SmsTemplate, params: Mapping[str, Any]) -> dict[str, str]:
    """The params as they will appear in the body; a clear SmsInputError if any is wrong."""
    if not isinstance(params, Mapping):
        raise SmsInputError("SMS params must be a mapping of names to values")
    if CODE_FIELD in params:
        raise SmsInputError("SMS params must not contain the code: it is computed at send time")
    missing = sorted(template.params - params.keys())
    if missing:
        raise SmsInputError(f"template {template.name!r} needs params: {', '.join(missing)}")
    unknown = sorted(params.keys() - template.params)
    if unknown:
        raise SmsInputError(f"template {template.name!r} has no params: {', '.join(unknown)}")
    shown = {}
    for name in template.params:
        try:
            shown[name] = _PARAM_CHECKS[name](params[name])
            if name in _ENGLISH_FORMS:
                shown[name + ENGLISH_SUFFIX] = _ENGLISH_FORMS[name](params[name])
        except ValueError as err:
            raise SmsInputError(f"SMS param {name!r} {err}") from None
    return shown


def render(name: str, params: Mapping[str, Any], code: str | None = None) -> str:
    template = get_template(name)
    shown = check_params(template, params)
    if template.needs_code:
        if not code:
            raise SmsInputError(f"template {name!r} needs a code")
        shown[CODE_FIELD] = code
    return template.text.format(**shown)


def _is_gsm7(body: str) -> bool:
    # Close enough for sizing: Twilio sends anything outside printable ASCII as UCS-2.
    return all(" " <= ch <= "~" for ch in body)


def segments(body: str) -> int:
    """How many SMS parts the body takes (GSM-7: 160/153, UCS-2: 70/67 UTF-16 units)."""
    if _is_gsm7(body):
        single, part, size = 160, 153, len(body)
    else:
        single, part, size = 70, 67, len(body.encode("utf-16-le")) // 2
    return 1 if size <= single else -(-size // part)
