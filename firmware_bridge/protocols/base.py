"""What every lock-board codec provides: frames as small declarative classes, and a protocol
that builds requests and splits a byte stream into frames.

Codecs are sans-IO: bytes in, frames out, no clocks, no ports. The streaming decoder follows
pymodbus' RTU framer: ``decode(buffer)`` returns ``(consumed, frame)``; consumed 0 means "need
more bytes"; consumed > 0 without a frame means those leading bytes were dropped as noise. It
copes with, and never raises on:

- garbage before a frame (``FA FD 99 99`` from a USB adapter waking up): skipped up to the
  next byte that can start a frame;
- a bad checksum or impossible field: one byte is dropped and the search starts again, since
  the real frame may begin inside the rejected one;
- a truncated frame followed by a good one: the good one is found the same way;
- bytes after a frame: left in the buffer for the next call;
- a head that could still grow into a long frame ("need more") while the stream has ended or
  the line has gone quiet: ``decode(..., final=True)`` says no more bytes are coming, so the
  head is given up as noise and the frames behind it are found (a stray ``80`` before an 8A
  reply would otherwise hold ``80 | 80 00 00 33 B3`` back until 12 bytes had arrived).

When several frame kinds fit, the shortest valid one wins, so feeding a stream in any split
gives the same frames as feeding it whole (and then flushing it with ``final=True``).

Besides replies, a board may put frames on the line that answer nothing: door reports pushed
by 8A firmware, or a valid frame whose meaning no document gives (``Frame.UNKNOWN``, such as
the cu48b ``77`` frame). A protocol lists them in ``NOTICES``; the transaction decodes them
alongside the reply it awaits and hands them on instead of calling them garbage.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, ClassVar, Self

from firmware_bridge.errors import ConfigError

if TYPE_CHECKING:
    from firmware_bridge.config import BoardConfig

BITS_PER_CHAR = 10  # 8N1 on the wire: start bit, 8 data bits, stop bit
# Kerong and 8A boards have no inter-frame rule of their own (unlike Modbus's 3.5 characters).
# The silence only has to cover the board's transceiver turning from send back to receive,
# which it does within a bit time of its stop bit; the gap is counted from the moment its
# reply reached us, so one character time is already a wide margin. A longer gap costs every
# poll of every board: at 19200 baud it is 0.5 ms a character on a 7 ms transaction.
TURNAROUND_GAP_CHARS = 1.0

RejectHook = Callable[[bytes, str], None]


class Command(enum.StrEnum):
    UNLOCK = "unlock"
    UNLOCK_ALL = "unlock_all"
    UNLOCK_MANY = "unlock_many"  # several chosen locks in one frame (8A batch unlock)
    KEEP_POWER = "keep_power"  # hold an electromagnetic lock open, then let it go (8A)
    PULSE_TIME = "pulse_time"  # set the board's own lock pulse length (cu16)
    QUERY_ONE = "query_one"
    QUERY_ALL = "query_all"


class Frame:
    """One message on the wire. Subclasses are frozen dataclasses whose class attributes say
    what the frame looks like; ``pack``/``unpack`` turn it into bytes and back. Every frame
    has a ``board`` (the address it is from or for). ``RANGES`` bounds the fields a frame
    format can carry, so a frame that cannot be packed is refused when it is built."""

    CHECK_LEN: ClassVar[int] = 1
    RANGES: ClassVar[dict[str, range]] = {}
    # A valid frame whose meaning no document gives: noted once, never taken for garbage.
    UNKNOWN: ClassVar[bool] = False
    # A kind whose length only the line going quiet tells (an 8A status reply of a board
    # whose width nobody knows yet): the transaction waits longer for that silence.
    ENDS_ON_SILENCE: ClassVar[bool] = False

    def __post_init__(self) -> None:
        for field, allowed in self.RANGES.items():
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
                raise ConfigError(
                    f"{type(self).__name__}: {field} must be {allowed.start}..{allowed.stop - 1},"
                    f" not {value!r}"
                )

    @classmethod
    def seal(cls, body: bytes) -> bytes:
        """``body`` followed by its checksum."""
        raise NotImplementedError

    @classmethod
    def sealed(cls, frame: bytes) -> bool:
        return len(frame) > cls.CHECK_LEN and cls.seal(frame[: -cls.CHECK_LEN]) == frame

    @classmethod
    def match(cls, buffer: bytes, final: bool = False) -> int | None:
        """Length of the frame of this kind that ``buffer`` starts with (checksum unchecked),
        0 if more bytes are needed to tell, None if the buffer cannot start one. ``final``:
        no more bytes will come (only kinds whose length is not fixed need to know)."""
        raise NotImplementedError

    @classmethod
    def unpack(cls, frame: bytes) -> Self | None:
        """The message in a complete, checksum-valid frame; None if a field is impossible."""
        raise NotImplementedError

    def pack(self) -> bytes:
        raise NotImplementedError

    def refusal(self) -> str | None:
        """Why the board refused the request, for replies that say so (Modbus exceptions)."""
        return None


class Request(Frame):
    """A frame the master sends. ``REPLIES`` are the frame kinds that can answer it."""

    REPLIES: ClassVar[tuple[type[Frame], ...]] = ()
    WHAT: ClassVar[str] = "request"  # for messages: "board 1 did not answer a status query"

    def expected(self) -> tuple[type[Frame], ...]:
        """The reply kinds to decode for this very request: ``REPLIES`` unless the request
        knows more (an 8A status query that knows how long its board's reply is)."""
        return self.REPLIES

    def answered_by(self, reply: Frame) -> bool:
        return isinstance(reply, self.REPLIES) and reply.board == self.board


class LockProtocol:
    """One board family: line facts, the requests it has, its frames and its status layout.

    Class attributes are the defaults a board of this family gets when nobody configured it.
    """

    name: ClassVar[str]
    baud: ClassVar[int]
    response_timeout: ClassVar[float]  # seconds from the end of our frame to the full reply
    gap_chars: ClassVar[float]  # silence before each frame, in character times
    addresses: ClassVar[range]  # every address a board can have (a broadcast is not one)
    scan_addresses: ClassVar[range]  # what `scan` tries by default: common DIP settings
    broadcast: ClassVar[int | None] = None  # address every board hears, if the family has one
    max_channels: ClassVar[int]
    default_channels: ClassVar[int | None]  # None: as many as the board reports
    has_sensors: ClassVar[bool]
    pulse_ms: ClassVar[int]
    answers_unlock: ClassVar[bool] = True  # whether the board replies to an unlock
    channel_base: ClassVar[int]  # number the board gives its first lock in request frames
    commands: ClassVar[frozenset[Command]]
    starts: ClassVar[bytes | None]  # bytes a frame can begin with; None: any byte
    REQUESTS: ClassVar[tuple[type[Request], ...]]
    REPLIES: ClassVar[tuple[type[Frame], ...]]
    NOTICES: ClassVar[tuple[type[Frame], ...]] = ()  # frames that answer no request

    def gap(self, baud: int) -> float:
        """Seconds of silence the line needs before we may send."""
        return self.gap_chars * BITS_PER_CHAR / baud

    def decode(
        self,
        buffer: bytes,
        kinds: Sequence[type[Frame]] | None = None,
        on_reject: RejectHook | None = None,
        *,
        final: bool = False,
    ) -> tuple[int, Frame | None]:
        """Take one frame (or some noise) off the front of ``buffer``.

        ``kinds`` limits the search (default: every reply and notice this protocol has); the
        transaction passes the replies of the request it sent (and the notices), which
        settles the ambiguities of the bcc-8a format (query-one vs query-all replies, and a
        query-all reply's length). ``on_reject(bytes, reason)`` hears about
        frame-shaped bytes that failed their checksum or fields. ``final``: no more bytes
        will follow, so a head that only "needs more" is dropped instead of waited for.
        """
        if not buffer:
            return 0, None
        buffer = bytes(buffer)
        best: tuple[int, Frame] | None = None
        need_more = False
        for kind in kinds if kinds is not None else (*self.REPLIES, *self.NOTICES):
            length = kind.match(buffer, final)
            if length is None:
                continue
            if length == 0 or length > len(buffer):
                need_more = True
                continue
            raw = buffer[:length]
            if not kind.sealed(raw):
                if on_reject is not None:
                    on_reject(raw, "bad checksum")
                continue
            try:
                frame = kind.unpack(raw)
            except ConfigError:  # a field outside the kind's RANGES: never raise on bytes
                frame = None
            if frame is None:
                if on_reject is not None:
                    on_reject(raw, "impossible field")
                continue
            if best is None or length < best[0]:
                best = (length, frame)
        if best is not None:
            return best
        if need_more and not final:
            return 0, None
        return self._skip(buffer), None

    def _skip(self, buffer: bytes) -> int:
        """How many leading bytes to drop so the buffer begins where a frame could."""
        if self.starts is None:
            return 1
        for i in range(1, len(buffer)):
            if buffer[i] in self.starts:
                return i
        return len(buffer)

    def decode_all(self, buffer: bytes, kinds: Sequence[type[Frame]] | None = None) -> list[Frame]:
        """Every frame in a finished buffer (tests and tools; the bus streams)."""
        frames = []
        while buffer:
            used, frame = self.decode(buffer, kinds, final=True)
            if used == 0:
                break
            buffer = buffer[used:]
            if frame is not None:
                frames.append(frame)
        return frames

    # -- requests ------------------------------------------------------------------------

    def _lacks(self, command: Command) -> ConfigError:
        return ConfigError(f"{self.name} boards have no {command.value.replace('_', '-')} request")

    def unlock(self, board: int, wire_channel: int, pulse_ms: int) -> Request:
        raise self._lacks(Command.UNLOCK)

    def unlock_all(self, board: int) -> Request:
        raise self._lacks(Command.UNLOCK_ALL)

    def unlock_many(self, board: int, wire_channels: Sequence[int]) -> Request:
        raise self._lacks(Command.UNLOCK_MANY)

    def keep_power(self, board: int, wire_channel: int, on: bool) -> Request:
        raise self._lacks(Command.KEEP_POWER)

    def pulse_time(self, board: int, pulse_ms: int) -> Request:
        """The request storing the board's own pulse; its ``pulse_ms`` is what the board
        will keep (the frame's steps may round it up)."""
        raise self._lacks(Command.PULSE_TIME)

    def query_one(self, board: int, wire_channel: int) -> Request:
        raise self._lacks(Command.QUERY_ONE)

    def query_all(self, board: int, channels: int, reply_width: int | None = None) -> Request:
        """The whole-board status query. ``reply_width``: inputs the board's reply is known
        to carry (configured, or seen in its last reply), for families whose reply length
        follows the board; None when nobody knows yet."""
        raise self._lacks(Command.QUERY_ALL)

    def reported_input(self, notice: Frame) -> tuple[int, int] | None:
        """(wire channel, input level) a door report carries; None for other notices."""
        return None

    def reply_width(self, reply: Frame) -> int | None:
        """Inputs a status reply carried, for families whose replies are as long as the
        board is wide (remembered for the next query); None where the length is fixed."""
        return None

    # -- replies -------------------------------------------------------------------------

    def inputs(self, reply: Frame, config: BoardConfig) -> tuple[list[int], list[int] | None]:
        """Raw input levels of every channel a status reply carries (channel 1 first), and
        the occupancy sensor levels where the frame has them."""
        raise NotImplementedError

    def channel_inputs(
        self, request: Request, reply: Frame, config: BoardConfig, channel: int
    ) -> tuple[int, int | None] | None:
        """Input level and sensor level (None: no sensor) of API channel ``channel`` in the
        reply to ``query_one``; None when the reply does not carry that channel. By default
        the query-one reply is a whole status reply and the channel is picked from it."""
        levels, sensors = self.inputs(reply, config)
        if channel > len(levels):
            return None
        return levels[channel - 1], None if sensors is None else sensors[channel - 1]


def bits(data: Iterable[int], count: int | None = None) -> list[int]:
    """Channel i+1 is bit (i % 8) of byte i // 8: the layout every family here uses."""
    levels = [(byte >> bit) & 1 for byte in data for bit in range(8)]
    return levels if count is None else levels[:count]


def pack_bits(levels: Sequence[int], nbytes: int) -> bytes:
    """Inverse of ``bits``; inputs past ``levels`` read 0."""
    out = bytearray(nbytes)
    for i, level in enumerate(levels[: nbytes * 8]):
        if level:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)
