"""Delivering the webhook outbox: claim due events, sign, POST, record.

The patterns are the SMS dispatcher's (cloud_api/sms/dispatcher.py): several API processes
may each run a worker against one database; an event belongs to the worker that moved it to
``sending`` with a conditional UPDATE (PostgreSQL picks candidates with ``FOR UPDATE SKIP
LOCKED`` first); claim, send and record are committed one by one, so a worker that dies after
the POST leaves the event ``sending`` until its lease runs out and another worker sends it
again: delivery is at least once, and the receiver dedupes on ``X-Xinbao-Event-Id``.

In order per record: an event is due only when no earlier event of the same record for the
same subscriber is still ``pending`` or ``sending``. A later event waits for an earlier one
that is backing off, however long; a subscriber that is down holds back only its own streams,
and one record's trouble holds back no other record. A dead letter stops holding back (the
stream goes on without it); replaying it puts it back in line before the events queued after
it that are still undelivered, while those delivered meanwhile stay delivered: receivers order
by ``sequence`` (docs/integrators.md).

Retries back off exponentially (base doubling, capped, a little jitter). After
``max_attempts`` attempts, or once the event is older than ``max_age`` (counted from when it
was queued or replayed), it is a dead letter, listed for administrators who can replay it.
An event whose subscriber was disabled, or whose key was revoked or may no longer read the
record, is never sent: it dies with that reason.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from sqlalchemy import Engine, and_, exists, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, aliased

from cloud_api.core.backoff import backoff_delay
from cloud_api.models.common import as_utc, utcnow
from cloud_api.models.handover import Handover
from cloud_api.models.record import ApprovalRecord
from cloud_api.models.staff import ApiKey, Scope
from cloud_api.models.webhook import (
    UNDELIVERED,
    WebhookEvent,
    WebhookEventStatus,
    WebhookSubscriber,
)
from cloud_api.services.code_release import plain_code, why_not_live
from cloud_api.webhooks import signing
from cloud_api.webhooks.events import may_read

log = logging.getLogger(__name__)

_ERROR_LIMIT = 500
USER_AGENT = "Xinbao-Webhooks/1"


def _short(text: str) -> str:
    return text if len(text) <= _ERROR_LIMIT else text[: _ERROR_LIMIT - 1] + "…"


@dataclass(frozen=True)
class Outgoing:
    """One attempt, prepared inside a read transaction and sent outside any."""

    pk: int
    subscriber_id: int
    event_id: str
    type: str
    attempt: int
    url: str
    # Never in a repr (a log line, a traceback): the secret signs, the body may hold a code.
    secret: str = field(repr=False)
    body: bytes = field(repr=False)


class WebhookDispatcher:
    def __init__(
        self,
        engine: Engine,
        *,
        master_secret: bytes,
        digits: int,
        max_attempts: int = 20,
        backoff_base_seconds: float = 5.0,
        backoff_max_seconds: float = 3600.0,
        max_age_seconds: float = 72 * 3600.0,
        timeout_seconds: float = 10.0,
        lease_seconds: float = 120.0,
        batch_size: int = 20,
        clock: Callable[[], datetime] = utcnow,
        service_clock: Callable[[], datetime] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not master_secret:
            raise ValueError("the master secret is empty")
        self.engine = engine
        self._master = master_secret
        self._digits = digits
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base_seconds
        self.backoff_max = backoff_max_seconds
        self.max_age = timedelta(seconds=max_age_seconds)
        self.lease = timedelta(seconds=max(lease_seconds, timeout_seconds * 2))
        self.batch_size = batch_size
        # The outbox's times (due, age, lease) are the audit trail's clock; whether a code is
        # still live is the service's question, asked with the service's clock (create_app's).
        self._clock = clock
        self._service_clock = service_clock or clock
        # No redirects (a 3xx is a failure: the subscriber's URL is what an admin set), no
        # proxies from the environment, nothing kept between requests but connections.
        self._client = httpx.Client(
            timeout=timeout_seconds,
            follow_redirects=False,
            trust_env=False,
            transport=transport,
            headers={"User-Agent": USER_AGENT},
        )

    def close(self) -> None:
        self._client.close()

    # -- claiming ---------------------------------------------------------------------------

    def _due(self, now: datetime):
        return or_(
            and_(
                WebhookEvent.status == WebhookEventStatus.pending.value,
                WebhookEvent.next_attempt_at <= now,
            ),
            and_(
                WebhookEvent.status == WebhookEventStatus.sending.value,
                WebhookEvent.claimed_until < now,
            ),
        )

    @staticmethod
    def _in_line():
        """No earlier event of the same record for the same subscriber is undelivered."""
        earlier = aliased(WebhookEvent)
        return ~exists().where(
            earlier.subscriber_id == WebhookEvent.subscriber_id,
            earlier.record_id == WebhookEvent.record_id,
            earlier.id < WebhookEvent.id,
            earlier.status.in_(UNDELIVERED),
        )

    def claim(self, limit: int) -> list[int]:
        """Ids of up to ``limit`` due events first in their line, now ``sending`` and ours."""
        now = self._clock()
        with Session(self.engine) as session, session.begin():
            query = (
                select(WebhookEvent.id)
                .where(self._due(now), self._in_line())
                .order_by(WebhookEvent.id)
                .limit(limit)
            )
            if session.bind.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            claimed = []
            for pk in list(session.scalars(query)):
                # Conditional: another worker may have taken it since our SELECT.
                won = session.execute(
                    update(WebhookEvent)
                    .where(WebhookEvent.id == pk, self._due(now))
                    .values(
                        status=WebhookEventStatus.sending.value,
                        claimed_until=now + self.lease,
                        attempts=WebhookEvent.attempts + 1,
                    )
                    .execution_options(synchronize_session=False)
                ).rowcount
                if won == 1:
                    claimed.append(pk)
        return claimed

    # -- sending ----------------------------------------------------------------------------

    def run_once(self, limit: int | None = None) -> int:
        """Claim and deliver up to ``limit`` due events; how many were handled."""
        claimed = self.claim(self.batch_size if limit is None else limit)
        # Subscribers found unreachable in this round: their other events back off without
        # an attempt, so a subscriber that is down costs one timeout a round, not one an event.
        away: dict[int, str] = {}
        for pk in claimed:
            self._deliver(pk, away)
        return len(claimed)

    def _code(self, session: Session, event: WebhookEvent, subscriber, key) -> dict | None:
        """The ``code`` member of a code.issued body, for a subscriber that opted in."""
        if event.type != "code.issued" or not subscriber.include_codes:
            return None
        if Scope.codes_read.value not in key.scopes.split():
            return {"code": None, "code_withheld": "the API key lacks codes:read"}
        data = event.payload.get("data", {})
        handover_id, counter = data.get("handover_id"), data.get("counter")
        handover = session.get(Handover, handover_id) if isinstance(handover_id, int) else None
        why = (
            "the handover is gone"
            if handover is None
            else why_not_live(handover, counter, self._service_clock())
        )
        if why is not None:
            return {"code": None, "code_withheld": why}
        return {"code": plain_code(self._master, self._digits, handover.locker_id, counter)}

    def _prepare(self, pk: int) -> Outgoing | str | None:
        """The attempt to make, or why the event must die (a str), or None (gone)."""
        with Session(self.engine) as session:
            event = session.get(WebhookEvent, pk)
            if event is None or event.status != WebhookEventStatus.sending:
                return None
            subscriber = session.get(WebhookSubscriber, event.subscriber_id)
            key = session.get(ApiKey, subscriber.api_key_id)
            record = session.get(ApprovalRecord, event.record_id)
            if not subscriber.active:
                return "the subscriber is disabled"
            if not may_read(key, record):
                return "the API key was revoked or may not read this record"
            if self._clock() - as_utc(event.queued_at) > self.max_age:
                return f"older than {self.max_age} without delivery"
            envelope = {
                "id": event.event_id,
                "type": event.type,
                "occurred_at": as_utc(event.occurred_at).isoformat(),
                "sequence": event.audit_seq,
                **event.payload,
            }
            code = self._code(session, event, subscriber, key)
            if code is not None:
                envelope["data"] = {**envelope.get("data", {}), **code}
            body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
            # The code (if any) lives on only in ``body``, in memory, until this attempt ends.
            return Outgoing(
                pk=pk,
                subscriber_id=subscriber.id,
                event_id=event.event_id,
                type=event.type,
                attempt=event.attempts,
                url=subscriber.url,
                secret=signing.subscriber_secret(self._master, subscriber.secret_salt),
                body=body,
            )

    def _deliver(self, pk: int, away: dict[int, str]) -> None:
        try:
            prepared = self._prepare(pk)
        except SQLAlchemyError as err:
            log.error("webhook event %s: cannot read it (%s); its lease will run out", pk, err)
            return
        if prepared is None:
            return
        if isinstance(prepared, str):
            self._finish_dead(pk, prepared)
            return
        if prepared.subscriber_id in away:
            self._release(prepared, away[prepared.subscriber_id])
            return
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            signing.TIMESTAMP_HEADER: timestamp,
            signing.SIGNATURE_HEADER: signing.signature(prepared.secret, timestamp, prepared.body),
            signing.EVENT_ID_HEADER: prepared.event_id,
            signing.EVENT_TYPE_HEADER: prepared.type,
            signing.ATTEMPT_HEADER: str(prepared.attempt),
        }
        try:
            response = self._client.post(prepared.url, content=prepared.body, headers=headers)
        except (httpx.InvalidURL, ValueError) as err:
            # A URL the client cannot use (check_url refuses these; an older row may hold
            # one): retrying would not help. UnicodeError (IDNA) is a ValueError.
            self._finish_dead(prepared.pk, f"the subscriber's URL cannot be used: {err}")
            return
        except httpx.TimeoutException as err:
            away[prepared.subscriber_id] = f"timed out: {err.__class__.__name__}"
            self._retry_later(prepared, away[prepared.subscriber_id], None)
            return
        except httpx.HTTPError as err:
            # Refused, reset, unreachable, TLS: the subscriber is away; try again later.
            away[prepared.subscriber_id] = f"cannot reach the subscriber: {err}"
            self._retry_later(prepared, away[prepared.subscriber_id], None)
            return
        if 200 <= response.status_code < 300:
            self._record(
                pk,
                status=WebhookEventStatus.delivered.value,
                delivered_at=self._clock(),
                claimed_until=None,
                last_status_code=response.status_code,
                last_error=None,
            )
            return
        self._retry_later(
            prepared, f"the subscriber answered HTTP {response.status_code}", response.status_code
        )

    def _record(self, pk: int, **values) -> None:
        """Write the outcome if the event is still ``sending`` (a replay or another worker's
        outcome after a lease ran out knows as much as we do)."""
        try:
            with Session(self.engine) as session, session.begin():
                session.execute(
                    update(WebhookEvent)
                    .where(
                        WebhookEvent.id == pk,
                        WebhookEvent.status == WebhookEventStatus.sending.value,
                    )
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
        except SQLAlchemyError as err:
            # Stays ``sending``; the lease runs out and the event is sent again (same id).
            log.error("cannot record the outcome of webhook event %s: %s", pk, err)

    def _delay(self, attempt: int) -> float:
        return backoff_delay(self.backoff_base, self.backoff_max, attempt - 1)

    def _retry_later(self, prepared: Outgoing, error: str, status_code: int | None) -> None:
        if prepared.attempt >= self.max_attempts:
            self._finish_dead(
                prepared.pk,
                f"{error} (gave up after {prepared.attempt} attempts)",
                last_status_code=status_code,
            )
            return
        delay = self._delay(prepared.attempt)
        log.warning(
            "webhook event %s attempt %s failed, retry in %.1fs: %s",
            prepared.event_id,
            prepared.attempt,
            delay,
            error,
        )
        self._record(
            prepared.pk,
            status=WebhookEventStatus.pending.value,
            claimed_until=None,
            next_attempt_at=self._clock() + timedelta(seconds=delay),
            last_status_code=status_code,
            last_error=_short(error),
        )

    def _release(self, prepared: Outgoing, error: str) -> None:
        """Put a claimed event back untried (its subscriber just failed another attempt):
        the claim's attempt is not counted."""
        self._record(
            prepared.pk,
            status=WebhookEventStatus.pending.value,
            claimed_until=None,
            attempts=max(0, prepared.attempt - 1),
            next_attempt_at=self._clock() + timedelta(seconds=self._delay(prepared.attempt)),
            last_error=_short(f"not tried: {error}"),
        )

    def _finish_dead(self, pk: int, error: str, **values) -> None:
        log.error("webhook event %s is a dead letter: %s", pk, error)
        self._record(
            pk,
            status=WebhookEventStatus.dead.value,
            dead_at=self._clock(),
            claimed_until=None,
            last_error=_short(error),
            **values,
        )

    # -- background loop --------------------------------------------------------------------

    async def run_forever(self, stop_event: asyncio.Event, interval: float) -> None:
        """Deliver until ``stop_event`` is set; the blocking work runs in a worker thread."""
        while not stop_event.is_set():
            try:
                handled = await asyncio.to_thread(self.run_once)
            except SQLAlchemyError as err:
                log.error("webhook delivery failed, retrying in %.1fs: %s", interval, err)
                handled = 0
            if handled >= self.batch_size:
                continue  # more may be waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), timeout=interval)
