"""One master's link to the virtual bus: request reassembly, wire time, reply scheduling.

Wire time is what makes latency figures honest: at 8N1 every byte is 10 bit times, so a
request frame is complete on the wire no earlier than its first byte's arrival plus
``len * 10 / baud``, and a reply cannot arrive faster than the same rate. A pty or socket
delivers bytes instantly, so the session computes those instants, acts on a request only
once it would be complete, and writes a reply (in one burst) only once its last byte would
have arrived. With ``wire_timing`` off both are immediate.

The session is driven by exactly one endpoint thread: ``receive`` when bytes arrive,
``run_due`` when ``next_due`` has passed. Boards and the truth log are thread-safe.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable

from simulator.bus import Reply, VirtualBus
from simulator.protocols import Request
from simulator.truth import GroundTruth

# A partial frame older than this is line noise: real boards reset their receiver after a
# short silence, so a stale fragment never glues onto the next request.
FRAME_TIMEOUT = 0.1


class LinkSession:
    def __init__(
        self,
        bus: VirtualBus,
        truth: GroundTruth,
        write: Callable[[bytes], int],
        *,
        link: str,
    ) -> None:
        self._bus = bus
        self._truth = truth
        self._write = write
        self._link = link
        self._char = 10 / bus.baud if bus.wire_timing else 0.0
        # Silence a board waits out to know a request ended (Modbus RTU: 3.5 characters).
        self._frame_end = bus.protocol.frame_end_silence(bus.baud) if bus.wire_timing else 0.0
        self._buffer = bytearray()
        self._chunks: deque[list[float]] = deque()  # [bytes left, arrival instant]
        self._buffer_start = 0.0  # instant the first buffered byte was on the wire
        self._wire_free_at = 0.0  # end of the last request frame on the wire
        self._tx_free_at = 0.0  # end of the last reply on the wire
        self._last_rx = 0.0
        self._noise = bytearray()
        self._due: list[tuple[float, int, Callable[[float], None]]] = []
        self._order = itertools.count()

    # -- input --------------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> None:
        if not data:
            return
        if not self._buffer:
            self._buffer_start = max(now, self._wire_free_at)
        self._buffer += data
        self._chunks.append([len(data), now])
        self._last_rx = now
        self._extract(now)

    def _extract(self, now: float) -> None:
        parse = self._bus.protocol.parse
        while self._buffer:
            consumed, request = parse(bytes(self._buffer))
            if consumed == 0:
                break
            start = self._buffer_start
            complete = start + consumed * self._char if self._char else now
            if request is None:
                self._noise += self._buffer[:consumed]
            else:
                self._flush_noise()
                self._schedule(complete, lambda t, r=request, c=complete: self._handle(r, c, t))
            self._consume(consumed, complete)
        if not self._buffer:
            self._flush_noise()

    def _consume(self, count: int, complete: float) -> None:
        del self._buffer[:count]
        self._wire_free_at = max(self._wire_free_at, complete)
        while count and self._chunks:
            take = min(count, int(self._chunks[0][0]))
            self._chunks[0][0] -= take
            count -= take
            if self._chunks[0][0] == 0:
                self._chunks.popleft()
        if self._chunks:
            # The next byte went on the wire after this frame, and not before it arrived.
            self._buffer_start = max(complete, self._chunks[0][1])

    def _flush_noise(self) -> None:
        if self._noise:
            self._truth.record(
                "noise_dropped", bus=self._bus.name, link=self._link, hex=self._noise.hex(" ")
            )
            self._noise.clear()

    # -- scheduled work ---------------------------------------------------------------------

    def _schedule(self, due: float, action: Callable[[float], None]) -> None:
        heapq.heappush(self._due, (due, next(self._order), action))

    def next_due(self) -> float | None:
        candidates = [self._due[0][0]] if self._due else []
        if self._buffer:
            candidates.append(self._last_rx + FRAME_TIMEOUT)
        return min(candidates) if candidates else None

    def run_due(self, now: float) -> None:
        while self._due and self._due[0][0] <= now:
            _, _, action = heapq.heappop(self._due)
            action(now)
        if self._buffer and now - self._last_rx >= FRAME_TIMEOUT:
            self._noise += self._buffer
            self._consume(len(self._buffer), now)
            self._flush_noise()

    def _handle(self, request: Request, complete: float, now: float) -> None:
        self._truth.record(
            "frame_received",
            bus=self._bus.name,
            board=request.address,
            channel=request.channel,
            mono=complete,
            link=self._link,
            hex=request.raw.hex(" "),
            command=request.command,
            on_wire_complete=complete,
        )
        for reply in self._bus.dispatch(request):
            ready = complete + self._frame_end + self._bus.reply_delay + reply.delay
            begin = max(now, ready, self._tx_free_at)
            end = begin + len(reply.data) * self._char
            if reply.pause is not None and reply.pause[0] < len(reply.data):
                # The front goes out, the line pauses, then the rest follows.
                after, pause = reply.pause
                front, rest = reply.data[:after], reply.data[after:]
                front_end = begin + len(front) * self._char
                end += pause
                self._schedule(front_end, lambda t, r=reply, d=front: self._send(r, d))
                self._schedule(end, lambda t, d=rest: self._resume(d))
            else:
                # A reply already due (no wire timing) goes out in this same pass of run_due.
                self._schedule(end, lambda t, r=reply: self._send(r))
            self._tx_free_at = end

    def push(self, data: bytes, board: int, channel: int | None, now: float) -> None:
        """Send ``data`` unasked (a board reporting a door), after whatever is already
        going out: one pair carries one frame at a time."""
        begin = max(now, self._tx_free_at)
        end = begin + len(data) * self._char
        self._tx_free_at = end
        self._schedule(end, lambda t: self._send_report(data, board, channel))

    def _send_report(self, data: bytes, board: int, channel: int | None) -> None:
        self._truth.record(
            "report_sent",
            bus=self._bus.name,
            board=board,
            channel=channel,
            link=self._link,
            hex=data.hex(" "),
        )
        self._write(data)

    def _resume(self, data: bytes) -> None:
        self._truth.record("reply_resumed", bus=self._bus.name, link=self._link, hex=data.hex(" "))
        self._write(data)

    def _send(self, reply: Reply, data: bytes | None = None) -> None:
        """Write ``reply`` (or ``data``, its front, when the reply pauses on the way)."""
        data = reply.data if data is None else data
        # Log first: the master may act on the reply the instant it is written, and the
        # ground truth must never show an effect before its cause.
        self._truth.record(
            "reply_sent",
            bus=self._bus.name,
            board=reply.boards[0] if len(reply.boards) == 1 else None,
            link=self._link,
            hex=reply.data.hex(" "),
            garbled=reply.garbled,
        )
        written = self._write(data)
        if written < len(data):
            self._truth.record(
                "reply_lost", bus=self._bus.name, link=self._link, lost=len(data) - written
            )
