"""One request at a time on a master/slave bus: send, wait for the matching reply, retry.

Why each rule exists:
- The line is held for a whole attempt (send, reply or timeout, drain): RS-485 is half
  duplex with one master; two threads interleaving frames would garble both. It is let go
  between retries, and urgent requests (unlocks) take it before routine ones (status
  polls): a keypad user must not wait for the retries of a poll of a dead board.
- A reply ends on its length (the codec knows it), so a USB adapter that delivers a frame
  in bursts does not split it, and a reply is used the moment it is whole. Only an 8A status
  reply whose board's width nobody knows yet ends on silence (SILENCE_FRAMED_QUIET_S after
  its last byte); the bus then knows the width for the next one. Such a reply that began
  before the deadline is given its silence even when that runs past the deadline: the
  board answered in time, and a scan with a short timeout must not call it garbled.
- Frames that do not answer the request in flight (another board, another kind) are dropped:
  a duplicate DIP address or a late reply must not pass for the answer. Notices (frames a
  board sends of its own accord, LockProtocol.NOTICES) are no such trouble: door reports go
  to ``on_notice`` wherever they turn up (waiting for a reply, draining, in the bytes that
  arrived between two requests, or while ``listen`` watches the idle line), and a valid
  frame nobody documented is logged once per board and kind, then ignored.
- After a failed attempt the line is read until it has been quiet for a while (default half
  the response timeout): a board that answers late must not have its reply taken as the
  answer to the next request. Stale bytes are also dropped right before every send (after
  the notices among them are picked out).
- Modbus needs 3.5 character times of silence between frames; every protocol declares its
  gap, measured from the last byte on the line in either direction (our own frame's end is
  estimated from its length and the baud rate, as a USB adapter gives no transmit-done).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from firmware_bridge.errors import BoardRefusal, BoardTimeout, ProtocolError
from firmware_bridge.protocols.base import BITS_PER_CHAR, Frame, LockProtocol, Request
from firmware_bridge.transport import SerialTransport

log = logging.getLogger(__name__)

DRAIN_MAX_S = 1.0  # a line that never goes quiet (a babbling board) still ends the drain
GARBLED_QUIET_S = 0.025  # after a bad frame, this much silence ends the attempt early
# A reply whose length only silence tells must not end on a pause inside it: a USB adapter
# hands bytes on in bursts (an FTDI's latency timer is 16 ms), and a loaded machine may not
# read them for a while. Only an 8A board's first status replies wait this long.
SILENCE_FRAMED_QUIET_S = 0.08


@dataclass(frozen=True)
class Exchange:
    frame: Frame | None  # None when no reply was expected
    sent_at: float  # time.monotonic() when the request was handed to the port


class LineTurn:
    """Who uses the line next: one holder at a time, urgent waiters before routine ones."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._urgent_waiting = 0

    @contextmanager
    def hold(self, urgent: bool) -> Iterator[None]:
        with self._cond:
            self._urgent_waiting += urgent
            try:
                while self._busy or (not urgent and self._urgent_waiting):
                    self._cond.wait()
            finally:
                self._urgent_waiting -= urgent
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()


class BusTransaction:
    def __init__(
        self,
        transport: SerialTransport,
        protocol: LockProtocol,
        *,
        timeout: float | None = None,
        retries: int = 2,
        gap: float | None = None,
        drain_quiet: float | None = None,
    ) -> None:
        self.transport = transport
        self.protocol = protocol
        self.timeout = protocol.response_timeout if timeout is None else timeout
        self.retries = retries
        self.gap = protocol.gap(transport.baud) if gap is None else gap
        self.drain_quiet = self.timeout / 2 if drain_quiet is None else drain_quiet
        self._char_time = BITS_PER_CHAR / transport.baud
        self._turn = LineTurn()
        self._line_busy_until = 0.0  # time.monotonic() of the last byte on the line
        self.on_notice: Callable[[Frame], None] | None = None  # door reports and the like
        self._unknown_seen: set[tuple[str, int]] = set()  # (frame kind, board) logged once
        # Boards whose latest reply was followed by bytes that were neither a reply nor a
        # notice: the reply may have been framed too short (see take_trailed).
        self._trailed: set[int] = set()
        self._last_replier: int | None = None

    def execute(
        self,
        request: Request,
        *,
        expect_reply: bool = True,
        retries: int | None = None,
        timeout: float | None = None,
        urgent: bool = False,
    ) -> Exchange:
        """Send ``request`` and return the board's reply (``urgent``: before routine work).

        Raises BoardTimeout when every attempt met silence, ProtocolError when something
        answered but never usably (bad checksum, garbled, another board), BoardRefusal when
        the board refused, LinkError when the port fails.
        """
        wait = self.timeout if timeout is None else timeout
        attempts = 1 + (self.retries if retries is None else retries)
        problem: str | None = None
        first_sent: float | None = None
        for attempt in range(1, attempts + 1):
            with self._turn.hold(urgent):
                sent_at = self._send(request)
                first_sent = sent_at if first_sent is None else first_sent
                if not expect_reply:
                    return Exchange(None, sent_at)
                frame, trouble = self._await(request, self._line_busy_until + wait)
                if frame is not None:
                    refusal = frame.refusal()
                    if refusal:
                        raise BoardRefusal(
                            f"board {request.board}: {refusal}", board=request.board, reason=refusal
                        )
                    self._last_replier = frame.board
                    return Exchange(frame, sent_at)
                problem = trouble or problem
                log.debug(
                    "board %s: attempt %d/%d failed (%s)",
                    request.board,
                    attempt,
                    attempts,
                    trouble or "silence",
                )
                self._drain()
        what = request.WHAT
        tries = f"{attempts} attempt{'s' * (attempts > 1)}"
        if problem:
            reason = f"{problem} in reply to {what} ({tries})"
            raise ProtocolError(
                f"board {request.board}: {reason}", board=request.board, reason=reason
            )
        reason = f"did not answer {what} within {wait:g} s ({tries})"
        raise BoardTimeout(
            f"board {request.board} {reason}",
            board=request.board,
            reason=reason,
            sent_at=first_sent,
        )

    def listen(self, duration: float) -> None:
        """Watch the idle line for ``duration`` seconds (routine priority: any request
        queued first goes first) and hand every notice heard to ``on_notice``."""
        with self._turn.hold(urgent=False):
            deadline = time.monotonic() + duration
            heard = bytearray()
            while (left := deadline - time.monotonic()) > 0:
                chunk = self.transport.read(min(left, GARBLED_QUIET_S))
                if chunk:
                    self._line_busy_until = time.monotonic()
                    heard += chunk
                    heard = self._take_notices(heard, final=False)
            self._take_notices(heard, final=True)

    def _notice(self, frame: Frame) -> None:
        if frame.UNKNOWN:
            key = (type(frame).__name__, frame.board)
            if key not in self._unknown_seen:
                self._unknown_seen.add(key)
                log.info(
                    "board %s sent a valid %s frame with no documented meaning (%s); ignored",
                    frame.board,
                    self.protocol.name,
                    frame.pack().hex(" "),
                )
            return
        if self.on_notice is not None:
            self.on_notice(frame)
        else:
            log.debug("board %s: notice %r with nobody listening", frame.board, frame)

    def take_trailed(self) -> set[int]:
        """Boards whose reply was followed, since the last call, by bytes that were neither a
        reply nor a notice. For a reply framed on a learnt length that is the sign the
        length was learnt short (the rest of the reply came after it)."""
        trailed, self._trailed = self._trailed, set()
        return trailed

    def _take_notices(
        self, data: bytes | bytearray, *, final: bool, after: int | None = None
    ) -> bytearray:
        """Hand on the notices in ``data``; what is left (a notice still arriving, unless
        ``final``). Everything else in it was not asked for and is dropped; when ``after``
        names the board whose reply these bytes followed, that board is noted as trailed."""
        rest = bytes(data)
        while rest:
            used, frame = self.protocol.decode(rest, self.protocol.NOTICES, final=final)
            if used == 0:
                break
            if frame is not None:
                self._notice(frame)
            elif after is not None:
                self._trailed.add(after)
            rest = rest[used:]
        return bytearray(rest)

    def _send(self, request: Request) -> float:
        quiet_until = self._line_busy_until + self.gap
        now = time.monotonic()
        if now < quiet_until:
            time.sleep(quiet_until - now)
        # Anything already waiting was not asked for; door reports among it still count.
        stale = self.transport.take_waiting()
        if stale:
            self._take_notices(stale, final=True, after=self._last_replier)
        self._last_replier = None
        frame = request.pack()
        sent_at = self.transport.write(frame)
        self._line_busy_until = max(time.monotonic(), sent_at + len(frame) * self._char_time)
        return sent_at

    def _await(self, request: Request, deadline: float) -> tuple[Frame | None, str | None]:
        """Read until a frame answers ``request`` or the deadline passes; on failure, the
        most telling thing that was heard instead (None: silence)."""
        buffer = bytearray()
        noise = bytearray()
        heard: dict[str, str] = {}  # kind of trouble -> latest example
        last_byte_at = looked_at = 0.0
        echo = request.pack()
        kinds = (*request.expected(), *self.protocol.NOTICES)
        silence_framed = any(kind.ENDS_ON_SILENCE for kind in request.expected())
        quiet = SILENCE_FRAMED_QUIET_S if silence_framed else GARBLED_QUIET_S
        # A line that never goes quiet still ends the wait this long after the deadline.
        last_call = deadline + 2 * quiet

        def reject(raw: bytes, reason: str) -> None:
            heard[reason] = f"{reason} ({raw.hex(' ')})"

        while True:
            now = time.monotonic()
            if buffer and now - last_byte_at > quiet and looked_at != last_byte_at:
                # The head of the buffer still "needs more" but the line went quiet: noise
                # that looks like the start of a long frame (a stray 80 before an 8A reply,
                # 01 02 05 before a Modbus one) must not hide a whole reply behind it.
                looked_at = last_byte_at
                found = self._flush(request, kinds, buffer)
                if found is not None:
                    return found, None
            # A frame with a bad checksum followed by silence: the board has had its say.
            said_its_say = "bad checksum" in heard and now - last_byte_at > GARBLED_QUIET_S
            # A reply framed on silence that began in time is waited for until it has had
            # its silence (the flush above then takes it), not cut off at the deadline.
            finishing = (
                silence_framed and buffer and now - last_byte_at <= quiet and now < last_call
            )
            if (now >= deadline and not finishing) or said_its_say:
                if buffer and request.expected() != request.REPLIES:
                    # Time is up, so nothing more of the reply is coming: a frame shorter
                    # than the request expected is the board's whole answer after all (an
                    # 8A board narrower than its wired channels), for the caller to judge.
                    found = self._flush(request, (*request.REPLIES, *self.protocol.NOTICES), buffer)
                    if found is not None:
                        return found, None
                if noise.startswith(echo):
                    # Our own frame, echoed by the adapter (loop://, some RS-485 converters):
                    # it says nothing about the board.
                    del noise[: len(echo)]
                if noise:
                    heard["garbled"] = f"garbled bytes ({bytes(noise[:32]).hex(' ')})"
                if buffer:
                    heard["incomplete"] = f"incomplete frame ({bytes(buffer).hex(' ')})"
                for kind in ("bad checksum", "impossible field", "unexpected", "garbled"):
                    if kind in heard:
                        return None, heard[kind]
                return None, heard.get("incomplete")
            until = last_byte_at + quiet if finishing else deadline
            chunk = self.transport.read(max(min(until - now, GARBLED_QUIET_S), 0.001))
            if not chunk:
                continue
            last_byte_at = self._line_busy_until = time.monotonic()
            buffer += chunk
            while buffer:
                used, frame = self.protocol.decode(bytes(buffer), kinds, reject)
                if used == 0:
                    break
                if frame is None:
                    noise += buffer[:used]
                del buffer[:used]
                if frame is None:
                    continue
                if isinstance(frame, self.protocol.NOTICES):
                    self._notice(frame)
                    continue
                if request.answered_by(frame):
                    if buffer:  # a report behind it, or the rest of a reply framed short
                        log.debug("after a reply: %s", bytes(buffer).hex(" "))
                        self._take_notices(buffer, final=True, after=frame.board)
                    return frame, None
                heard["unexpected"] = f"unexpected frame {frame!r}"

    def _flush(
        self, request: Request, kinds: tuple[type[Frame], ...], buffer: bytearray
    ) -> Frame | None:
        """The reply to ``request`` in ``buffer`` if the bytes are taken as all there is
        (``decode(final=True)``: a head that only "needs more" is noise, and a reply whose
        length only silence tells ends here). The buffer is left as it was when there is
        none, in case the line was merely slow (its notices are then found later)."""
        rest = bytes(buffer)
        notices = []
        while rest:
            used, frame = self.protocol.decode(rest, kinds, final=True)
            if isinstance(frame, self.protocol.NOTICES):
                notices.append(frame)
            elif frame is not None and request.answered_by(frame):
                dropped = bytes(buffer[: len(buffer) - len(rest)])
                log.debug("dropped %s before a reply", dropped.hex(" "))
                for notice in notices:
                    self._notice(notice)
                return frame
            rest = rest[used:]
        return None

    def _drain(self) -> None:
        started = quiet_since = time.monotonic()
        drained = bytearray()
        while True:
            now = time.monotonic()
            if now - quiet_since >= self.drain_quiet or now - started >= DRAIN_MAX_S:
                if drained and self.protocol.NOTICES:
                    self._take_notices(drained, final=True)
                return
            late = self.transport.read(self.drain_quiet - (now - quiet_since))
            if late:
                quiet_since = self._line_busy_until = time.monotonic()
                drained += late
                log.debug("drained late bytes %s", late.hex(" "))
