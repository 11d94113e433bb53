"""Who actually delivers an SMS: the console (demo, tests) or Twilio.

Both honour one small protocol. ``send`` returns the provider's id for the message (its sid)
or raises ``SmsProviderUnavailable`` (the provider is down or refuses us: try later, not the
message's fault), ``SmsTemporaryError`` (try later) or ``SmsPermanentError`` (this message
never will work).
``find_sent`` lets the dispatcher ask, before it sends again, whether an earlier attempt did
reach the provider after all (a timeout or a crash can hide an accepted message).
"""

import logging
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from cloud_api.sms.config import SmsSettings
from cloud_api.sms.errors import (
    SmsConfigError,
    SmsPermanentError,
    SmsProviderUnavailable,
    SmsTemporaryError,
)
from cloud_api.sms.models import as_utc, utcnow

log = logging.getLogger(__name__)


class SmsProvider(Protocol):
    name: str

    def send(self, to: str, body: str, status_callback: str | None) -> str: ...

    def find_sent(self, to: str, body: str, since: datetime) -> list[str]:
        """Sids of messages with this body to this number accepted since ``since``."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ConsoleSms:
    sid: str
    to: str
    body: str
    status_callback: str | None
    sent_at: datetime


class ConsoleProvider:
    """Plays the applicant's phone: messages are logged and kept in a bounded in-memory inbox.

    In memory, not a database table, on purpose: the body is the one place a code exists in
    plaintext, and a table would put every code of the demo into the database and its backups.
    The price is that the inbox lives in the process that dispatched the message and is lost on
    restart, which suits the console provider's users (the single-process demo, testers).
    """

    name = "console"

    def __init__(self, capacity: int = 500) -> None:
        self._inbox: deque[ConsoleSms] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def send(self, to: str, body: str, status_callback: str | None) -> str:
        sms = ConsoleSms(f"CONSOLE{uuid.uuid4().hex}", to, body, status_callback, utcnow())
        with self._lock:
            self._inbox.append(sms)
        log.info("console SMS %s to %s: %s", sms.sid, to, body)
        return sms.sid

    def find_sent(self, to: str, body: str, since: datetime) -> list[str]:
        with self._lock:
            return [
                m.sid for m in self._inbox if m.to == to and m.body == body and m.sent_at >= since
            ]

    def inbox(self, to: str | None = None, limit: int = 50) -> list[ConsoleSms]:
        """Newest first, optionally for one number."""
        with self._lock:
            found = [m for m in reversed(self._inbox) if to is None or m.to == to]
        return found[:limit]

    def close(self) -> None:
        pass


# Twilio answers these with HTTP 4xx although waiting helps: rate limits and queue overflow,
# which are about our account, not about one message.
_TEMPORARY_TWILIO_CODES = frozenset({14107, 20429, 30001})
# Twilio's clock and ours may disagree; look back this much further when reconciling.
_CLOCK_SKEW = timedelta(minutes=5)


class _RebasedHttpClient(TwilioHttpClient):
    """Sends every Twilio API request to another origin (a local fake in tests).

    twilio-python builds absolute ``https://api.twilio.com/...`` URLs, and its region/edge
    options can only pick other ``*.twilio.com`` hosts, so the origin is rewritten here.
    """

    def __init__(self, api_base: str, timeout: float) -> None:
        super().__init__(timeout=timeout)
        base = urlsplit(api_base)
        if base.scheme not in ("http", "https") or not base.netloc:
            raise SmsConfigError(f"twilio_api_base {api_base!r} is not an http(s) URL")
        self._scheme, self._netloc = base.scheme, base.netloc

    def request(self, method, url, *args, **kwargs):  # type: ignore[override]
        parts = urlsplit(url)
        url = urlunsplit((self._scheme, self._netloc, parts.path, parts.query, parts.fragment))
        return super().request(method, url, *args, **kwargs)


def _classify(err: TwilioRestException | TwilioServiceException) -> Exception:
    status = getattr(err, "status", None)
    code = err.code if isinstance(err.code, int) else None
    message = getattr(err, "msg", None) or getattr(err, "detail", None) or str(status)
    text = f"Twilio HTTP {status} error {code}: {message}"
    if status in (401, 403):
        # Wrong credentials: every message fails until an operator fixes the settings, so keep
        # the messages and retry with back-off instead of killing them all.
        log.error("Twilio refused our credentials (%s); check XINBAO_SMS_TWILIO_*", text)
        return SmsProviderUnavailable(text, code=code, status=status)
    if status == 429 or (status or 0) >= 500 or code in _TEMPORARY_TWILIO_CODES:
        return SmsProviderUnavailable(text, code=code, status=status)
    return SmsPermanentError(text, code=code, status=status)


class TwilioProvider:
    name = "twilio"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_: str,
        *,
        api_base: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if api_base:
            self._http = _RebasedHttpClient(api_base, timeout)
        else:
            self._http = TwilioHttpClient(timeout=timeout)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        self._from = from_

    def send(self, to: str, body: str, status_callback: str | None) -> str:
        extra = {"status_callback": status_callback} if status_callback else {}
        try:
            message = self._client.messages.create(to=to, from_=self._from, body=body, **extra)
        except (TwilioRestException, TwilioServiceException) as err:
            raise _classify(err) from err
        except requests.RequestException as err:
            # A read timeout may hide an accepted message: the dispatcher asks find_sent first
            # before it tries again.
            raise SmsProviderUnavailable(f"cannot reach Twilio: {err}") from err
        except (TwilioException, ValueError, TypeError, KeyError) as err:
            # twilio-python parses the answer itself: a body that is not the JSON it expects
            # surfaces as a JSON or lookup error. Counted: it may be this message's doing.
            raise SmsTemporaryError(f"unexpected answer from Twilio: {err!r}") from err
        if not message.sid:
            raise SmsTemporaryError("Twilio accepted the message but returned no sid")
        return message.sid

    def find_sent(self, to: str, body: str, since: datetime) -> list[str]:
        # Not filtered by DateSent: a message still queued at Twilio has no date_sent yet.
        try:
            recent = self._client.messages.list(to=to, from_=self._from, limit=50)
        except (TwilioRestException, TwilioServiceException) as err:
            raise _classify(err) from err
        except requests.RequestException as err:
            raise SmsProviderUnavailable(f"cannot list Twilio messages: {err}") from err
        except (TwilioException, ValueError, TypeError, KeyError) as err:
            raise SmsTemporaryError(f"unexpected list answer from Twilio: {err!r}") from err
        earliest = since - _CLOCK_SKEW
        return [
            m.sid
            for m in recent
            if m.sid
            and m.body == body
            and (m.date_created is None or as_utc(m.date_created) >= earliest)
        ]

    def close(self) -> None:
        if self._http.session is not None:
            self._http.session.close()


def build_provider(settings: SmsSettings) -> SmsProvider:
    if settings.provider == "twilio":
        assert settings.twilio_auth_token is not None  # checked by SmsSettings
        return TwilioProvider(
            settings.twilio_account_sid or "",
            settings.twilio_auth_token.get_secret_value(),
            settings.twilio_from or "",
            api_base=settings.twilio_api_base,
            timeout=settings.twilio_timeout_seconds,
        )
    return ConsoleProvider(settings.console_inbox_size)
