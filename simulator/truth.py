"""Ground truth: every physical happening on the simulated cabinet, in order.

Tests and benchmarks count against this log (doors opened, frames complete on the wire),
so it records what *happened*, not what any master believes. Each event carries both a
wall-clock time (to line up with logs of other processes) and a monotonic time (to measure
latencies within this process without clock steps).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import IO, Any

EVENT_KINDS = frozenset(
    {
        "frame_received",  # a request frame complete on the wire (data: hex, on_wire_complete)
        "reply_sent",  # reply bytes going to the master (data: hex, garbled)
        "reply_lost",  # bytes of a reply the port could not take (nobody reading it)
        "reply_resumed",  # the rest of a reply that paused on the way (split_reply fault)
        "report_sent",  # an unasked door report going to the master (data: hex)
        "noise_dropped",  # bytes that never formed a frame
        "lock_pulse",  # a lock coil energised (data: duration_s, jammed)
        "pulse_time_set",  # the board stored a new lock pulse length (data: pulse_ms)
        "door_opened",  # by: command | tester | forced
        "door_closed",
        "close_blocked",  # someone tried to close a door that stays open (left_open fault)
        "item_put",
        "item_taken",
        "fault_injected",
        "fault_cleared",
        "master_connected",
        "master_disconnected",
    }
)


@dataclass(frozen=True)
class TruthEvent:
    seq: int
    kind: str
    wall: float
    mono: float
    bus: str | None = None
    board: int | None = None
    channel: int | None = None
    by: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GroundTruth:
    """Append-only, thread-safe event log shared by every board of one cabinet."""

    def __init__(self) -> None:
        self._events: list[TruthEvent] = []
        self._cond = threading.Condition()
        self._listeners: list[Callable[[TruthEvent], None]] = []

    def subscribe(self, listener: Callable[[TruthEvent], None]) -> None:
        """Call ``listener`` with every event recorded from now on, on the recording thread
        (boards that push door reports react to doors this way). It must not block."""
        with self._cond:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[TruthEvent], None]) -> None:
        with self._cond:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def record(
        self,
        kind: str,
        *,
        bus: str | None = None,
        board: int | None = None,
        channel: int | None = None,
        by: str | None = None,
        mono: float | None = None,
        **data: Any,
    ) -> TruthEvent:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown ground-truth event kind {kind!r}")
        now_mono = time.monotonic()
        now_wall = time.time()
        if mono is not None:
            # An instant in the past (e.g. when a frame's last byte was on the wire): shift
            # the wall clock by the same amount so both timestamps name the same instant.
            now_wall -= now_mono - mono
            now_mono = mono
        with self._cond:
            event = TruthEvent(
                seq=len(self._events) + 1,
                kind=kind,
                wall=now_wall,
                mono=now_mono,
                bus=bus,
                board=board,
                channel=channel,
                by=by,
                data=data,
            )
            self._events.append(event)
            self._cond.notify_all()
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)
        return event

    @property
    def last_seq(self) -> int:
        with self._cond:
            return len(self._events)

    def events(
        self,
        kind: str | Iterable[str] | None = None,
        since: int | None = None,
        *,
        board: int | None = None,
        channel: int | None = None,
    ) -> list[TruthEvent]:
        """Events after sequence number ``since`` (exclusive), optionally filtered."""
        kinds = {kind} if isinstance(kind, str) else (set(kind) if kind is not None else None)
        with self._cond:
            snapshot = self._events[since or 0 :] if since and since > 0 else list(self._events)
        return [
            e
            for e in snapshot
            if (kinds is None or e.kind in kinds)
            and (board is None or e.board == board)
            and (channel is None or e.channel == channel)
        ]

    def wait_for(
        self,
        kind: str | Iterable[str],
        *,
        since: int | None = None,
        board: int | None = None,
        channel: int | None = None,
        timeout: float = 5.0,
    ) -> TruthEvent | None:
        """First matching event after ``since``, waiting up to ``timeout`` seconds for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self.events(kind, since, board=board, channel=channel)
                if found:
                    return found[0]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def dump_jsonl(self, out: IO[str], since: int | None = None) -> int:
        """Write events as JSON lines; returns how many were written."""
        events = self.events(since=since)
        for event in events:
            out.write(json.dumps(event.to_dict(), ensure_ascii=False) + "\n")
        return len(events)
