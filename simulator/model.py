"""Physical model of one compartment: a spring latch, a door, an infrared sensor, items.

The rules, as on a real cabinet:
- the latch holds the door shut; a lock pulse pulls the latch back for the pulse length;
- with a spring (the default) the door pops open as soon as the latch lets go, and stays open
  until someone pushes it shut; pushing it shut re-latches it;
- a jammed door does not move although the pulse fired, so "unlock sent" and "door open" are
  different facts (DESIGN.md §4);
- the feedback input reads "locked" only while the latch holds a shut door;
- items go in and out only while the door is open; the infrared sensor sees any item.

All state is guarded by the lock the board hands in (one lock per bus), because the bus
thread, the control API threads and test code all touch the same compartments.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from simulator.errors import CompartmentEmpty, DoorClosed, DoorLocked
from simulator.truth import GroundTruth

OPENED_BY = ("command", "tester", "forced")


@dataclass(frozen=True)
class CompartmentState:
    """A snapshot of one compartment, as the ground truth sees it."""

    board: int
    channel: int
    locked: bool  # latched and shut: what a "locked" feedback input means
    latched: bool
    door_open: bool
    pulsing: bool  # lock coil energised right now
    items: int
    occupied: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "channel": self.channel,
            "locked": self.locked,
            "latched": self.latched,
            "door_open": self.door_open,
            "pulsing": self.pulsing,
            "items": self.items,
            "occupied": self.occupied,
        }


class Compartment:
    def __init__(
        self,
        *,
        board: int,
        channel: int,
        lock: threading.RLock,
        truth: GroundTruth,
        bus: str | None,
        spring_open: bool = True,
    ) -> None:
        self.board = board
        self.channel = channel
        self._lock = lock
        self._truth = truth
        self._bus = bus
        self._spring_open = spring_open
        self._latched = True
        self._door_open = False
        self._pulse_until = 0.0
        self._items = 0

    def _record(self, kind: str, **kw: object) -> None:
        self._truth.record(kind, bus=self._bus, board=self.board, channel=self.channel, **kw)

    # -- what sensors read -------------------------------------------------------------

    def is_locked(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            return self._latched and not self._door_open and now >= self._pulse_until

    def is_pulsing(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            return now < self._pulse_until

    @property
    def occupied(self) -> bool:
        with self._lock:
            return self._items > 0

    def state(self) -> CompartmentState:
        now = time.monotonic()
        with self._lock:
            return CompartmentState(
                board=self.board,
                channel=self.channel,
                locked=self.is_locked(now),
                latched=self._latched,
                door_open=self._door_open,
                pulsing=self.is_pulsing(now),
                items=self._items,
                occupied=self._items > 0,
            )

    # -- what happens to it ---------------------------------------------------------------

    def pulse(self, duration: float, *, jammed: bool = False) -> bool:
        """Energise the lock coil for ``duration`` seconds; True if the door opened."""
        now = time.monotonic()
        with self._lock:
            self._pulse_until = max(self._pulse_until, now + duration)
            self._record("lock_pulse", duration_s=duration, jammed=jammed)
            if jammed or self._door_open:
                # A jammed door stays shut and the latch snaps back after the pulse.
                return False
            if not self._spring_open:
                # No spring: the latch stays back until someone pulls the door and shuts it.
                self._latched = False
                return False
            self._open("command")
            return True

    def release(self) -> None:
        """De-energise the coil now (a relay switched off before its pulse ended)."""
        with self._lock:
            self._pulse_until = min(self._pulse_until, time.monotonic())

    def open_door(self, by: str = "tester") -> bool:
        """Pull the door open; False if it was already open. Force breaks the latch."""
        if by not in OPENED_BY:
            raise ValueError(f"by must be one of {OPENED_BY}, not {by!r}")
        with self._lock:
            if self._door_open:
                return False
            if by != "forced" and self.is_locked():
                raise DoorLocked(
                    f"board {self.board} channel {self.channel} is latched: send a lock pulse "
                    "or force it open"
                )
            self._open(by)
            return True

    def _open(self, by: str) -> None:
        self._door_open = True
        self._latched = False
        self._record("door_opened", by=by)

    def close_door(self, *, blocked: bool = False, by: str = "tester") -> bool:
        """Push the door shut (re-latching it); False if something keeps it open."""
        with self._lock:
            if not self._door_open:
                return True
            if blocked:
                self._record("close_blocked", by=by)
                return False
            self._door_open = False
            self._latched = True
            self._record("door_closed", by=by, items=self._items)
            return True

    def put_item(self, by: str = "tester") -> int:
        with self._lock:
            if not self._door_open:
                raise DoorClosed(f"board {self.board} channel {self.channel}: the door is shut")
            self._items += 1
            self._record("item_put", by=by, items=self._items)
            return self._items

    def take_item(self, by: str = "tester") -> int:
        with self._lock:
            if not self._door_open:
                raise DoorClosed(f"board {self.board} channel {self.channel}: the door is shut")
            if self._items == 0:
                raise CompartmentEmpty(f"board {self.board} channel {self.channel} is empty")
            self._items -= 1
            self._record("item_taken", by=by, items=self._items)
            return self._items
