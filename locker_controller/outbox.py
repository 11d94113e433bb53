"""Events: committed to the SQLite outbox first, published later, deleted on PUBACK.

``EventLog.record`` is the one way the controller states a fact. It commits before anyone can
publish, so a crash at any instant either loses an event that was never promised (the commit
did not happen) or keeps it for replay. ``OutboxPublisher`` sends rows in seq order whenever
the MQTT link is up and removes each one only when paho reports the broker's PUBACK for its
message id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Protocol

from locker_controller.store import Store
from xinbao.contract import EventType, LockerEvent

log = logging.getLogger(__name__)

# How long a published event may wait for its PUBACK before it is sent again. paho resends
# its own in-flight messages after a reconnect; this covers a message paho dropped.
RESEND_AFTER_S = 60.0
WINDOW = 100  # events in flight at once


class EventLog:
    def __init__(self, store: Store) -> None:
        self._store = store
        self.wake = asyncio.Event()

    def record(self, type_: EventType, compartment: int | None = None, **data: Any) -> LockerEvent:
        event = self._store.add_event(type_, compartment, data)
        log.info("event %s %s compartment=%s %s", event.seq, type_, compartment, data or "")
        self.wake.set()
        return event


class EventSink(Protocol):
    @property
    def connected(self) -> bool: ...
    def publish_event(self, event: LockerEvent) -> int | None: ...


class OutboxPublisher:
    def __init__(self, store: Store, events: EventLog) -> None:
        self._store = store
        self._events = events
        self._sink: EventSink | None = None
        self._inflight: dict[int, tuple[int, float]] = {}  # mid -> (seq, sent at)

    def attach(self, sink: EventSink) -> None:
        self._sink = sink

    def acknowledged(self, mid: int) -> None:
        """The broker has the message with this mid: the event may leave the outbox."""
        entry = self._inflight.pop(mid, None)
        if entry is None:
            return  # a presence or reply publish, or a duplicate ack
        self._store.delete_event(entry[0])
        self._events.wake.set()

    def link_up(self) -> None:
        self._events.wake.set()

    @property
    def depth(self) -> int:
        return self._store.outbox_depth()

    def flush(self) -> int:
        """Publish what is not in flight yet, oldest first; returns how many were sent."""
        if self._sink is None or not self._sink.connected:
            return 0
        now = time.monotonic()
        stale = {seq for seq, sent in self._inflight.values() if now - sent > RESEND_AFTER_S}
        if stale:
            self._inflight = {m: v for m, v in self._inflight.items() if v[0] not in stale}
        busy = {seq for seq, _ in self._inflight.values()}
        room = WINDOW - len(busy)
        sent = 0
        if room <= 0:
            return 0
        for event in self._store.pending_events(limit=WINDOW + len(busy)):
            if event.seq in busy:
                continue
            mid = self._sink.publish_event(event)
            if mid is None:
                break  # the link went down under us; the next link_up resumes
            self._inflight[mid] = (event.seq, now)
            sent += 1
            if sent >= room:
                break
        return sent

    async def run(self) -> None:
        while True:
            # The timeout looks for stale in-flight events now and then.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._events.wake.wait(), timeout=RESEND_AFTER_S / 4)
            self._events.wake.clear()
            self.flush()
