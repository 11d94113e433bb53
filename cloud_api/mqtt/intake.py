"""``FairIntake``: the bridge's queue between paho's thread and the ingest worker, fair per
locker and with a per-locker budget.

One FIFO queue let one locker account stall the city: 5,000 junk events at 2,135/s took the
worker 42 s to work off, and another locker's real event waited behind all of them. Here:

- **Fair queuing.** Each locker has its own queue, and the worker takes one message from each
  locker with something queued in turn (round robin). Another locker's message waits behind
  at most one message of each busy locker, however many the flooder queued.
- **Per-locker budget.** A token bucket per locker (``rate`` messages a second, ``burst`` at
  once): a message beyond it is not queued at all. The bridge acknowledges it to the broker
  unapplied and only counts it (per locker, reported by ``take_refused``), so junk is
  summarised, not stored row by row, and the memory a flood can take is bounded. An honest
  cabinet's replay after a long time off line can exceed the burst too: what was refused stays
  in its outbox (acknowledged by the broker, not confirmed by the cloud) and is sent again
  after the full sync the bridge asks for when the flood is over (the ``events_upto`` mark).

paho's thread calls ``put``; the one worker thread calls ``get``. Every method is thread safe.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Bucket:
    tokens: float
    at: float


class FairIntake(Generic[T]):
    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``rate`` <= 0: no budget (every message is queued)."""
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._cond = threading.Condition()
        self._queues: dict[str, deque[T]] = {}
        self._turns: deque[str] = deque()  # lockers with something queued, in turn order
        self._buckets: dict[str, _Bucket] = {}
        self._refused: dict[str, int] = {}
        self._size = 0
        self._closed = False

    # --- paho's thread --------------------------------------------------------------------

    def put(self, key: str, item: T) -> bool:
        """Queue ``item`` for locker ``key``; False if it is over the locker's budget (the
        caller acknowledges it unapplied; it is counted)."""
        with self._cond:
            if not self._spend(key):
                self._refused[key] = self._refused.get(key, 0) + 1
                return False
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = deque()
            if not queue:
                self._turns.append(key)
            queue.append(item)
            self._size += 1
            self._cond.notify()
            return True

    def _spend(self, key: str) -> bool:
        if self.rate <= 0:
            return True
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        if len(self._buckets) > 100_000:  # lockers long quiet have full buckets anyway
            self._forget_full(now)
        return True

    def _forget_full(self, now: float) -> None:
        full = [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.at) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]

    # --- the worker thread ----------------------------------------------------------------

    def get(self, timeout: float) -> T | None:
        """The next message, lockers taking turns; None on timeout or once closed."""
        with self._cond:
            if not self._turns and not self._closed:
                self._cond.wait(timeout)
            if not self._turns:
                return None
            key = self._turns.popleft()
            queue = self._queues[key]
            item = queue.popleft()
            self._size -= 1
            if queue:
                self._turns.append(key)  # its next message waits for everyone else's turn
            else:
                del self._queues[key]
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def qsize(self) -> int:
        with self._cond:
            return self._size

    def take_refused(self) -> dict[str, int]:
        """Messages refused per locker since the last call (and forget them)."""
        with self._cond:
            refused, self._refused = self._refused, {}
            return refused
