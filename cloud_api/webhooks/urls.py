"""Which subscriber URLs are taken: plain ``http://`` or ``https://`` to a named host.

Anything else is refused with a reason a person can act on, in Chinese and English (the
problem's ``reason``, ``message_zh``, ``message_en``): another scheme (``ftp:``, ``file:``,
``javascript:``), no host, a user name or password in the URL (it would sit in the database
and in every listing, in plain), a fragment (never sent), spaces or control characters.

Private and loopback addresses are allowed: the approval system often sits on the same
internal network, and only an administrator can add a subscriber.
"""

import re
from urllib.parse import urlsplit

import httpx

from cloud_api.errors import InputError

MAX_URL_LENGTH = 2000
_PORT = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
#: The URLs taken, as the OpenAPI document publishes them (a subset of what check_url takes:
#: an ASCII host name or address, no IPv6 literal), so a client can tell a good URL from the
#: schema alone. The API does not refuse by this pattern: check_url refuses with a reason.
_LABEL = "[A-Za-z0-9_~!$&'()*+,;=%-]{1,63}"
URL_PATTERN = (
    rf"^[Hh][Tt][Tt][Pp][Ss]?://{_LABEL}(?:\.{_LABEL})*(?::{_PORT})?"
    r"(?:[/?][\x21\x22\x24-\x7e]*)?$"
)
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")

_MESSAGES = {
    "webhook-url-scheme": (
        "推送地址须以 http:// 或 https:// 开头",
        "the webhook URL must start with http:// or https://",
    ),
    "webhook-url-host": ("推送地址缺少主机名", "the webhook URL names no host"),
    "webhook-url-credentials": (
        "推送地址不得包含用户名或密码，请用签名密钥验证",
        "the webhook URL must not hold a user name or password: verify the signature instead",
    ),
    "webhook-url-fragment": (
        "推送地址不得包含 # 片段",
        "the webhook URL must not have a #fragment (it is never sent)",
    ),
    "webhook-url-characters": (
        "推送地址含有空格或控制字符",
        "the webhook URL contains spaces or control characters",
    ),
    "webhook-url-length": (
        f"推送地址超过 {MAX_URL_LENGTH} 个字符",
        f"the webhook URL is longer than {MAX_URL_LENGTH} characters",
    ),
    "webhook-url-port": ("推送地址的端口无效", "the webhook URL has an invalid port"),
}


def _refuse(reason: str) -> InputError:
    zh, en = _MESSAGES[reason]
    error = InputError(en)
    error.extra = {"reason": reason, "message_zh": zh, "message_en": en}
    return error


def check_url(url: str) -> str:
    """The URL (without surrounding blanks: a pasted line break is no reason to refuse) if a
    subscriber may use it; InputError (422) with the reason otherwise."""
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise _refuse("webhook-url-length")
    if _SPACE_OR_CONTROL.search(url):
        raise _refuse("webhook-url-characters")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise _refuse("webhook-url-host") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise _refuse("webhook-url-scheme")
    if "@" in parts.netloc:
        raise _refuse("webhook-url-credentials")
    if not parts.hostname:
        raise _refuse("webhook-url-host")
    try:
        port = parts.port
    except ValueError:
        raise _refuse("webhook-url-port") from None
    if port == 0:
        raise _refuse("webhook-url-port")
    if parts.fragment or url.endswith("#"):
        raise _refuse("webhook-url-fragment")
    # A host name the HTTP client could not send to (an empty or over-long label, a malformed
    # international name) is refused now rather than found out at the first delivery.
    try:
        parts.hostname.encode("idna")
        httpx.Request("POST", url)
    except (httpx.InvalidURL, ValueError):
        raise _refuse("webhook-url-host") from None
    return url
