"""Sending the outbox: claim due rows, render, send, record.

Several API processes may run a dispatcher each against one database. A row is owned by the
process that moved it to ``sending`` with a conditional UPDATE (``WHERE status = 'pending'``
or an expired lease), so two dispatchers never both send it; on PostgreSQL the candidates are
picked with ``FOR UPDATE SKIP LOCKED`` first so dispatchers do not queue behind each other.

A row is claimed, then sent, then recorded, each step committed on its own. A process that dies
after the provider accepted a message but before the record leaves the row in ``sending``;
when its lease runs out another dispatcher takes it, and because it is not a first attempt it
asks the provider (``find_sent``) whether an identical message already went out before it sends
again. docs/sms.md explains the window that remains.

Failures are counted per message, and only those that may be the message's own doing: a
garbled answer, or a lease that ran out (the process died while sending; a message that
crashes every dispatcher must not loop for ever). When the provider as a whole is away
(credentials refused, 5xx, unreachable) nothing is counted and the message keeps backing off,
capped at ``backoff_max_seconds``: an outage of any length loses no SMS. A refusal of this one
message (invalid number) ends it as ``failed``. Staff can requeue a ``dead`` or ``failed``
message (``outbox.requeue``), which starts its count afresh.

Before sending, the dispatcher asks its ``obsolete`` hook (the service's
``services.sms_relevance.why_obsolete``) whether the message still applies; a code SMS whose
code was replaced, or whose handover ended, is marked ``superseded`` instead of sent.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from urllib.parse import urlencode

from sqlalchemy import Engine, case, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from cloud_api.core.backoff import backoff_delay
from cloud_api.sms.config import SmsSettings
from cloud_api.sms.errors import (
    SmsInputError,
    SmsPermanentError,
    SmsProviderUnavailable,
    SmsTemporaryError,
)
from cloud_api.sms.models import SmsMessage, SmsStatus, as_utc, utcnow
from cloud_api.sms.providers import SmsProvider
from cloud_api.sms.templates import get_template, render
from xinbao.codes import DEFAULT_DIGITS, code_for, derive_locker_key

log = logging.getLogger(__name__)

_ERROR_LIMIT = 500
#: Why a message should no longer be sent (None: send it), asked just before each send.
ObsoleteCheck = Callable[[Session, SmsMessage], str | None]
#: Told of each status a message takes (with its error), in the transaction that records it:
#: the service audits delivery outcomes there (and so derives the integrators' webhooks).
StatusHook = Callable[[Session, SmsMessage, str, str | None, str], None]


def _short(text: str) -> str:
    return text if len(text) <= _ERROR_LIMIT else text[: _ERROR_LIMIT - 1] + "…"


def callback_url(base: str | None, message_id: int) -> str | None:
    """The status callback URL for one message; the id lets a callback find a row whose sid
    was never recorded (a crash right after the provider accepted it)."""
    if not base:
        return None
    joiner = "&" if "?" in base else "?"
    return f"{base}{joiner}{urlencode({'message_id': message_id})}"


class SmsDispatcher:
    def __init__(
        self,
        engine: Engine,
        provider: SmsProvider,
        *,
        master_secret: bytes,
        digits: int = DEFAULT_DIGITS,
        max_attempts: int = 8,
        backoff_base_seconds: float = 30.0,
        backoff_max_seconds: float = 3600.0,
        claim_lease_seconds: float = 120.0,
        status_callback_url: str | None = None,
        batch_size: int = 50,
        poll_interval_seconds: float = 2.0,
        clock: Callable[[], datetime] = utcnow,
        obsolete: ObsoleteCheck | None = None,
        on_status: StatusHook | None = None,
    ) -> None:
        if not master_secret:
            raise ValueError("the master secret is empty")
        self.engine = engine
        self.provider = provider
        self._master_secret = master_secret
        self._digits = digits
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base_seconds
        self.backoff_max = backoff_max_seconds
        self.claim_lease = timedelta(seconds=claim_lease_seconds)
        self.status_callback_url = status_callback_url
        self.batch_size = batch_size
        self.poll_interval = poll_interval_seconds
        self._clock = clock
        self._obsolete = obsolete
        self._on_status = on_status

    @classmethod
    def from_settings(
        cls,
        engine: Engine,
        provider: SmsProvider,
        settings: SmsSettings,
        *,
        master_secret: bytes,
        digits: int = DEFAULT_DIGITS,
        obsolete: ObsoleteCheck | None = None,
        on_status: StatusHook | None = None,
    ) -> "SmsDispatcher":
        return cls(
            engine,
            provider,
            master_secret=master_secret,
            digits=digits,
            max_attempts=settings.max_attempts,
            backoff_base_seconds=settings.backoff_base_seconds,
            backoff_max_seconds=settings.backoff_max_seconds,
            claim_lease_seconds=settings.claim_lease_seconds,
            status_callback_url=settings.status_callback_url,
            batch_size=settings.batch_size,
            poll_interval_seconds=settings.poll_interval_seconds,
            obsolete=obsolete,
            on_status=on_status,
        )

    # -- claiming ---------------------------------------------------------------------------

    def _due(self, now: datetime):
        return or_(
            (SmsMessage.status == SmsStatus.pending.value) & (SmsMessage.next_attempt_at <= now),
            (SmsMessage.status == SmsStatus.sending.value) & (SmsMessage.claimed_until < now),
        )

    def claim(self, limit: int) -> list[int]:
        """Ids of up to ``limit`` due rows, now ``sending`` and owned by this dispatcher."""
        now = self._clock()
        with Session(self.engine) as session, session.begin():
            query = (
                select(SmsMessage.id)
                .where(self._due(now))
                .order_by(SmsMessage.next_attempt_at, SmsMessage.id)
                .limit(limit)
            )
            if session.bind.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            candidates = list(session.scalars(query))
            claimed = []
            for message_id in candidates:
                # Conditional: another dispatcher (SQLite has no SKIP LOCKED) may have won it
                # between our SELECT and this UPDATE; then the row no longer matches.
                result = session.execute(
                    update(SmsMessage)
                    .where(SmsMessage.id == message_id, self._due(now))
                    .values(
                        status=SmsStatus.sending.value,
                        claimed_until=now + self.claim_lease,
                        attempts=SmsMessage.attempts + 1,
                        # Taken over after a lease ran out: the sender died mid-send. Counted,
                        # so a message that kills every dispatcher ends instead of looping.
                        failures=SmsMessage.failures
                        + case((SmsMessage.status == SmsStatus.sending.value, 1), else_=0),
                        updated_at=now,
                    )
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 1:
                    claimed.append(message_id)
        return claimed

    # -- sending ----------------------------------------------------------------------------

    def run_once(self, limit: int = 50) -> int:
        """Claim and send up to ``limit`` due messages; returns how many were handled."""
        claimed = self.claim(limit)
        for message_id in claimed:
            self._deliver(message_id)
        return len(claimed)

    def render_body(self, message: SmsMessage) -> str:
        template = get_template(message.template)
        code = None
        if template.needs_code:
            if message.locker_id is None or message.code_counter is None:
                raise SmsInputError("the message has no locker_id/code_counter for its code")
            key = derive_locker_key(self._master_secret, message.locker_id)
            code = code_for(key, message.code_counter, self._digits)
        return render(message.template, message.params, code)

    def _deliver(self, message_id: int) -> None:
        with Session(self.engine) as session:
            message = session.get(SmsMessage, message_id)
            if message is None:
                return
            obsolete = self._obsolete(session, message) if self._obsolete else None
            session.expunge(message)
        if obsolete is not None:
            log.info("SMS %s is superseded, not sent: %s", message_id, obsolete)
            self._update_claimed(
                message,
                status=SmsStatus.superseded.value,
                claimed_until=None,
                last_error=_short(f"not sent: {obsolete}"),
            )
            return
        try:
            body = self.render_body(message)
        except (SmsInputError, ValueError) as err:
            self._finish_dead(message, f"cannot render: {err}")
            return
        try:
            if message.attempts > 1:
                # Not the first attempt: an earlier one may have reached the provider although
                # we never heard (timeout, crash). Look before sending the same text again.
                sid = self._already_sent(message, body)
                if sid is not None:
                    log.info(
                        "SMS %s was already accepted as %s; not sending again", message_id, sid
                    )
                    self._record_sent(message, sid)
                    return
            if message.failures >= self.max_attempts:
                self._finish_dead(message, f"gave up after {message.failures} failed attempts")
                return
            sid = self.provider.send(
                message.to_number, body, callback_url(self.status_callback_url, message_id)
            )
        except SmsProviderUnavailable as err:
            self._wait_for_provider(message, str(err))
            return
        except SmsTemporaryError as err:
            self._retry_later(message, str(err))
            return
        except SmsPermanentError as err:
            self._finish_failed(message, str(err))
            return
        self._record_sent(message, sid)

    def _already_sent(self, message: SmsMessage, body: str) -> str | None:
        since = as_utc(message.created_at)
        candidates = self.provider.find_sent(message.to_number, body, since)
        if not candidates:
            return None
        with Session(self.engine) as session:
            # Two messages may share a body (same person, same text): a sid already recorded
            # on another row belongs to that row.
            known = set(
                session.scalars(
                    select(SmsMessage.provider_sid).where(SmsMessage.provider_sid.in_(candidates))
                )
            )
        for sid in candidates:
            if sid not in known:
                return sid
        return None

    def _update_claimed(self, message: SmsMessage, **values) -> bool:
        """Write ``values`` if the row is still ours (``sending``): a delivery report may have
        overtaken us, and it knows better."""
        values["updated_at"] = self._clock()
        try:
            with Session(self.engine) as session, session.begin():
                result = session.execute(
                    update(SmsMessage)
                    .where(
                        SmsMessage.id == message.id,
                        SmsMessage.status == SmsStatus.sending.value,
                    )
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 1 and self._on_status and "status" in values:
                    self._on_status(
                        session, message, values["status"], values.get("last_error"), "sms"
                    )
                return result.rowcount == 1
        except IntegrityError:
            raise
        except SQLAlchemyError as err:
            # The row stays ``sending``; its lease runs out and a later attempt reconciles.
            log.error("cannot record the outcome of SMS %s: %s", message.id, err)
            return False

    def _record_sent(self, message: SmsMessage, sid: str) -> None:
        try:
            self._update_claimed(
                message,
                status=SmsStatus.sent.value,
                provider=self.provider.name,
                provider_sid=sid,
                sent_at=self._clock(),
                claimed_until=None,
                last_error=None,
            )
        except IntegrityError:
            # The sid is on another row already: a provider bug or a reconciliation mix-up.
            # Stop this row from being sent again and leave the evidence for staff.
            self._finish_dead(message, f"provider sid {sid} is already recorded on another SMS")

    def _delay(self, exponent: int) -> float:
        return backoff_delay(self.backoff_base, self.backoff_max, exponent)

    def _retry_later(self, message: SmsMessage, error: str) -> None:
        """A failure that counts toward giving up."""
        failures = message.failures + 1
        if failures >= self.max_attempts:
            self._finish_dead(
                message, f"{error} (gave up after {failures} failed attempts)", failures=failures
            )
            return
        delay = self._delay(failures - 1)
        log.warning(
            "SMS %s attempt %s failed (%s counted), retry in %.0fs: %s",
            message.id,
            message.attempts,
            failures,
            delay,
            error,
        )
        self._update_claimed(
            message,
            status=SmsStatus.pending.value,
            claimed_until=None,
            failures=failures,
            next_attempt_at=self._clock() + timedelta(seconds=delay),
            last_error=_short(error),
        )

    def _wait_for_provider(self, message: SmsMessage, error: str) -> None:
        """The provider is away: back off (longer each time, capped), count nothing."""
        delay = self._delay(message.attempts - message.failures - 1)
        log.warning(
            "SMS %s: provider unavailable, retry in %.0fs (not counted): %s",
            message.id,
            delay,
            error,
        )
        self._update_claimed(
            message,
            status=SmsStatus.pending.value,
            claimed_until=None,
            next_attempt_at=self._clock() + timedelta(seconds=delay),
            last_error=_short(f"provider unavailable: {error}"),
        )

    def _finish_failed(self, message: SmsMessage, error: str) -> None:
        """The provider refused this message for good (e.g. an invalid number)."""
        log.error("SMS %s refused by the provider: %s", message.id, error)
        self._update_claimed(
            message,
            status=SmsStatus.failed.value,
            claimed_until=None,
            provider=self.provider.name,
            failures=message.failures + 1,
            last_error=_short(error),
        )

    def _finish_dead(self, message: SmsMessage, error: str, **values) -> None:
        log.error("SMS %s is dead: %s", message.id, error)
        self._update_claimed(
            message,
            status=SmsStatus.dead.value,
            claimed_until=None,
            provider=self.provider.name,
            last_error=_short(error),
            **values,
        )

    # -- background loop --------------------------------------------------------------------

    async def run_forever(
        self, stop_event: asyncio.Event, interval: float | None = None, limit: int | None = None
    ) -> None:
        """Dispatch until ``stop_event`` is set; the blocking work runs in a worker thread."""
        interval = self.poll_interval if interval is None else interval
        limit = self.batch_size if limit is None else limit
        while not stop_event.is_set():
            try:
                handled = await asyncio.to_thread(self.run_once, limit)
            except SQLAlchemyError as err:
                # The database is away (restart, network): keep the loop alive and try again.
                log.error("SMS dispatch failed, retrying in %.1fs: %s", interval, err)
                handled = 0
            if handled >= limit:
                continue  # more may be waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), timeout=interval)
