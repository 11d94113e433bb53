"""What a bus knows about each board between requests, behind one lock: its health, its
latest status, how wide its status replies are, and the door reports it pushed.

The bus's threads (the controller's worker, a CLI, a listener) all read and write it, so
every method takes the lock; none of them does I/O.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace

from firmware_bridge.status import BoardHealth, BoardStatus, ChannelStatus, DoorReport

log = logging.getLogger(__name__)

# Reports kept for a caller that has not collected them yet: a few minutes of a busy
# cabinet; older ones are dropped first (the polls will have caught up with those doors).
MAX_REPORTS = 1000


@dataclass
class _Health:
    consecutive_timeouts: int = 0
    last_seen: float | None = None  # time.time() of the last valid frame
    timeouts: int = 0  # every exchange it left unanswered since the bus opened


class BoardBook:
    def __init__(self, boards: Iterable[int], unreachable_after: int) -> None:
        self.unreachable_after = unreachable_after
        self._lock = threading.Lock()
        self._health: dict[int, _Health] = {address: _Health() for address in boards}
        self._latest: dict[int, tuple[float, BoardStatus]] = {}  # board -> (monotonic, status)
        self._widths: dict[int, int] = {}  # board -> inputs its status replies carry
        self._width_seen: dict[int, int] = {}  # board -> width of its latest silence-framed
        self._reports: deque[DoorReport] = deque(maxlen=MAX_REPORTS)

    # -- health --------------------------------------------------------------------------

    def timed_out(self, board: int) -> None:
        with self._lock:
            record = self._health.setdefault(board, _Health())
            record.consecutive_timeouts += 1
            record.timeouts += 1
            if record.consecutive_timeouts == self.unreachable_after:
                log.warning("board %s is unreachable", board)

    def heard(self, board: int) -> None:
        """A valid frame came from ``board``."""
        with self._lock:
            record = self._health.setdefault(board, _Health())
            if record.consecutive_timeouts >= self.unreachable_after:
                log.info("board %s answers again", board)
            record.consecutive_timeouts = 0
            record.last_seen = time.time()

    def health(self, board: int) -> BoardHealth:
        with self._lock:
            return self._health_of(board, self._health.get(board, _Health()))

    def healths(self) -> list[BoardHealth]:
        with self._lock:
            return [self._health_of(b, r) for b, r in sorted(self._health.items())]

    def _health_of(self, board: int, record: _Health) -> BoardHealth:
        return BoardHealth(
            address=board,
            reachable=record.consecutive_timeouts < self.unreachable_after,
            consecutive_timeouts=record.consecutive_timeouts,
            last_seen=record.last_seen,
            timeouts=record.timeouts,
        )

    # -- status ----------------------------------------------------------------------------

    def saw_status(self, status: BoardStatus, width: int | None) -> None:
        """A status read. ``width``: the inputs a reply framed on the line's silence carried.
        Two such replies in a row must agree before the width is learnt: a pause inside one
        reply (a USB adapter's burst, a loaded machine) can end it early once, and a frame
        cut short can still check out (8A: ``80 01 00 33 B2`` is the front of a 24-input
        reply), so one reply alone must not set the length every later reply is framed on."""
        with self._lock:
            self._latest[status.board] = (time.monotonic(), status)
            if width is None:
                return
            if self._width_seen.get(status.board) == width:
                self._widths[status.board] = width
            self._width_seen[status.board] = width

    def latest(self, board: int) -> tuple[float, BoardStatus] | None:
        with self._lock:
            return self._latest.get(board)

    def fresh(self, board: int, within: float) -> BoardStatus | None:
        """The latest status of ``board`` if it is at most ``within`` seconds old."""
        with self._lock:
            seen = self._latest.get(board)
        if seen is None or time.monotonic() - seen[0] > within:
            return None
        return seen[1]

    def width(self, board: int) -> int | None:
        """Inputs ``board``'s last status reply carried (bcc-8a frames the next on it)."""
        with self._lock:
            return self._widths.get(board)

    def forget_width(self, board: int) -> bool:
        """A reply framed on the learnt width failed, or more bytes followed it: learn the
        width again from the line's silence. Whether a learnt width was forgotten."""
        with self._lock:
            self._width_seen.pop(board, None)
            return self._widths.pop(board, None) is not None

    # -- door reports ----------------------------------------------------------------------

    def report(self, board: int, status: ChannelStatus) -> None:
        """A pushed door change: queued, and written into the board's latest status (whose
        time is left alone: the other channels are no fresher than they were)."""
        with self._lock:
            self._reports.append(DoorReport(board, status, time.monotonic()))
            seen = self._latest.get(board)
            if seen is not None and status.channel <= len(seen[1].channels):
                channels = list(seen[1].channels)
                channels[status.channel - 1] = status
                self._latest[board] = (seen[0], replace(seen[1], channels=channels))

    def take_reports(self) -> list[DoorReport]:
        with self._lock:
            reports = list(self._reports)
            self._reports.clear()
            return reports
