"""Events and replies: committed to the SQLite outbox first, published later, marked on PUBACK.

``EventLog.record`` is the one way the controller states a fact, ``EventLog.reply`` the one
way it answers a command. Both commit before anyone can publish, so a crash at any instant
either loses something never promised (the commit did not happen) or keeps it for replay.
``OutboxPublisher`` sends events in seq order (and replies in the order they were made)
whenever the MQTT link is up, and marks each event sent (a reply: removes it) only when paho
reports the broker's PUBACK for its message id.

A PUBACK only says the broker has the message, and a broker drops a message no subscription
matches: Mosquitto 2.0 forgets the cloud's shared subscriptions ($share/...) when it restarts,
so a locker back before the cloud would have its outbox acknowledged and lost. After every
(re)connect the outbox is therefore held until the cloud has spoken to this connection (a
verified command; the cloud sends a full sync whenever it sees ``online``), and ``online`` is
announced again now and then while held, in case that sync was lost. That full sync also
carries the cloud's ``events_upto`` mark: events acknowledged by a broker that then lost them
are sent again, and the ones the cloud holds leave the outbox (outbox_store).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from locker_controller.metrics import ControllerMetrics
from locker_controller.store import Store
from xinbao.contract import CommandReply, EventType, LockerEvent

log = logging.getLogger(__name__)

# How long a published row may wait for its PUBACK before it is sent again. paho resends
# its own in-flight messages after a reconnect; this covers a message paho dropped.
RESEND_AFTER_S = 60.0
WINDOW = 100  # events in flight at once
# While the outbox is held, ``online`` is published again this often (the cloud answers each
# with a full sync).
REANNOUNCE_S = 15.0
REPLY_WINDOW = 20  # replies in flight at once

EVENT, REPLY = "event", "reply"
T = TypeVar("T")  # an outbox row as its publisher takes it


class EventLog:
    def __init__(self, store: Store, metrics: ControllerMetrics | None = None) -> None:
        self._store = store
        self._metrics = metrics
        self.wake = asyncio.Event()

    def record(self, type_: EventType, compartment: int | None = None, **data: Any) -> LockerEvent:
        event = self._store.add_event(type_, compartment, data)
        if self._metrics is not None:
            self._metrics.event(type_.value)
        log.info("event %s %s compartment=%s %s", event.seq, type_, compartment, data or "")
        self.wake.set()
        return event

    def reply(self, reply: CommandReply) -> None:
        self._store.add_reply(reply)
        log.info("reply to %s: %s", reply.request_id, "ok" if reply.ok else reply.error)
        self.wake.set()


class OutboxSink(Protocol):
    @property
    def connected(self) -> bool: ...
    def publish_event(self, event: LockerEvent) -> int | None: ...
    def publish_reply(self, body: bytes) -> int | None: ...
    def announce(self) -> None: ...


class OutboxPublisher:
    def __init__(self, store: Store, events: EventLog) -> None:
        self._store = store
        self._events = events
        self._sink: OutboxSink | None = None
        # mid -> (EVENT, seq, sent at) or (REPLY, reply row id, sent at)
        self._inflight: dict[int, tuple[str, int, float]] = {}
        self.held = True  # until the cloud has spoken on the current connection
        self._held_since = time.monotonic()

    def attach(self, sink: OutboxSink) -> None:
        self._sink = sink

    def acknowledged(self, mid: int) -> None:
        """The broker has the message with this mid: the row may leave the outbox."""
        entry = self._inflight.pop(mid, None)
        if entry is None:
            return  # a presence or telemetry publish, or a duplicate ack
        kind, key, _ = entry
        if kind == EVENT:
            self._store.event_acked(key)
        else:
            self._store.delete_reply(key)
        self._events.wake.set()

    def link_up(self) -> None:
        self.held = True
        self._held_since = time.monotonic()
        self._events.wake.set()

    def cloud_spoke(self) -> None:
        """A verified command came in: the cloud is subscribed, the outbox may flow."""
        if self.held:
            log.info("the cloud answered: sending the outbox (%s events)", self.depth)
        self.held = False
        self._events.wake.set()

    @property
    def depth(self) -> int:
        """Events not yet acknowledged by the broker (what telemetry reports)."""
        return self._store.outbox_depth()

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def flush(self) -> int:
        """Publish what is not in flight yet, oldest first; returns how many were sent."""
        if self._sink is None or not self._sink.connected:
            return 0
        now = time.monotonic()
        if self.held:
            if now - self._held_since >= REANNOUNCE_S:
                self._held_since = now
                self._sink.announce()
            return 0
        self._inflight = {m: v for m, v in self._inflight.items() if now - v[2] <= RESEND_AFTER_S}
        sink = self._sink
        sent = self._send(now, EVENT, WINDOW, self._events_due, sink.publish_event)
        return sent + self._send(
            now, REPLY, REPLY_WINDOW, self._store.pending_replies, sink.publish_reply
        )

    def _busy(self, kind: str) -> set[int]:
        return {key for k, key, _ in self._inflight.values() if k == kind}

    def _events_due(self, limit: int) -> list[tuple[int, LockerEvent]]:
        return [(event.seq, event) for event in self._store.pending_events(limit=limit)]

    def _send(
        self,
        now: float,
        kind: str,
        window: int,
        pending: Callable[[int], list[tuple[int, T]]],
        publish: Callable[[T], int | None],
    ) -> int:
        """Publish the oldest rows of one kind not yet in flight, until ``window`` of that kind
        are; ``pending(limit)`` gives (key, row) pairs, ``publish(row)`` the mid or None."""
        busy = self._busy(kind)
        room = window - len(busy)
        sent = 0
        if room <= 0:
            return 0
        for key, row in pending(window + len(busy)):
            if key in busy:
                continue
            mid = publish(row)
            if mid is None:
                break  # the link went down under us; the next link_up resumes
            self._inflight[mid] = (kind, key, now)
            sent += 1
            if sent >= room:
                break
        return sent

    async def run(self) -> None:
        while True:
            # The timeout looks for stale in-flight rows (and re-announces) now and then.
            # asyncio.timeout, not
            # wait_for: on Python 3.11 wait_for swallows a cancel that arrives as the event is
            # set, and the controller then never stops (this loop runs on, "cancelling").
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(RESEND_AFTER_S / 4, REANNOUNCE_S)):
                    await self._events.wake.wait()
            self._events.wake.clear()
            self.flush()
