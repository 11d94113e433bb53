"""Brute-force guard for the whole cabinet: N wrong codes -> locked, back-off doubling.

With 8-digit codes and ~100 live codes a single guess succeeds with p = 1e-6 (DESIGN.md §6);
the lockout keeps guesses per day small. It is per cabinet, not per person: the cabinet
cannot tell people apart. State is in SQLite so a power cycle does not reset it, and the
clock is wall time so the lockout survives the restart too.
"""

from __future__ import annotations

import math
import time

from locker_controller.config import ControllerConfig
from locker_controller.errors import CodeRefused
from locker_controller.outbox import EventLog
from locker_controller.store import Store
from xinbao.contract import EventType


def _tenths_up(seconds: float) -> float:
    return math.ceil(seconds * 10) / 10


class Lockout:
    def __init__(self, config: ControllerConfig, store: Store, events: EventLog) -> None:
        self.threshold = config.lockout_threshold
        self._base = config.lockout_base_s
        self._max = config.lockout_max_s
        self._store = store
        self._events = events

    def _get(self, key: str) -> float:
        return float(self._store.get_meta(f"lockout:{key}", "0") or 0)

    def _set(self, key: str, value: float) -> None:
        self._store.set_meta(f"lockout:{key}", repr(value))

    def remaining(self) -> float:
        """Seconds until codes are taken again (0 when not locked), in tenths rounded up:
        never 0 while check() still refuses."""
        return max(0.0, _tenths_up(self._get("until") - time.time()))

    def check(self) -> None:
        """Raise CodeRefused('locked_out') while locked."""
        remaining = self._get("until") - time.time()
        if remaining > 0:
            self._events.record(EventType.CODE_REFUSED, None, reason="locked_out")
            raise CodeRefused("locked_out", retry_after=_tenths_up(remaining))

    def failed(self, reason: str, **data: object) -> CodeRefused:
        """Count a wrong attempt; returns the error to raise (locked_out on the Nth)."""
        with self._store.transaction():
            failures = int(self._get("failures")) + 1
            self._events.record(
                EventType.CODE_REFUSED, None, reason=reason, failures=failures, **data
            )
            if failures < self.threshold:
                self._set("failures", failures)
                return CodeRefused(reason)
            level = int(self._get("level")) + 1
            seconds = min(self._base * 2 ** (level - 1), self._max)
            self._set("failures", 0)
            self._set("level", level)
            self._set("until", time.time() + seconds)
            self._events.record(EventType.LOCKOUT, None, seconds=seconds, level=level)
        return CodeRefused("locked_out", retry_after=seconds)

    def succeeded(self) -> None:
        if self._get("failures") or self._get("level"):
            with self._store.transaction():
                self._set("failures", 0)
                self._set("level", 0)
