"""Generic RS-485 "8A" lock boards, master side (DESIGN.md §4, from open generic-board drivers;
the "锁控板通讯协议和规格书" spec at https://blog.csdn.net/u012909822/article/details/147892413
shows the same unlock, open-all and query-one frames).

unlock       ``8A BOARD CH 11 BCC`` -> ``8A BOARD CH ST BCC``
open all     ``8A BOARD 00 11 BCC`` (CH 00 = every lock)
batch unlock ``90 BOARD S1 S2 S3 BCC``: a bit mask, S1 bit 0 = channel 1 (``90 01 02 02 02 93``
             opens 2, 10 and 18)
keep power   ``9A BOARD CH 11 BCC`` holds an electromagnetic lock open, ``9B BOARD CH 11 BCC``
             lets it go (staff loading a run of compartments)
query one    ``80 BOARD CH 33 BCC`` -> ``80 BOARD CH ST BCC``
query all    ``80 BOARD 00 33 BCC`` -> ``80 BOARD Sn..S1 33 BCC``
door report  ``82 BOARD CH ST BCC``, pushed unasked by firmware that reports door changes
BCC is the XOR of every preceding byte; ST is 00 for a low input, non-zero (11) for high.

Drivers name the 90, 9A, 9B and 82 heads but show no reply to the first three and no more
bytes of the others than the head: the keep-power and report frames above take the shape
every documented 8A frame has (HEAD BOARD CH X BCC), and nothing is awaited after a batch
unlock, an open-all or a keep-power frame (the bus reads the board's status instead).

A query-all reply is as long as the *board* is wide (3 data bytes on 24-channel boards, 7 on
50-56), and its data can itself hold ``33`` and a fitting XOR: ``80 01 00 33 B2 33 33`` is one
whole 24-channel reply, not a 1-byte reply and junk (an XOR check even passes on any two
replies run together). So a reply is framed on the length the board is configured with or
last answered with (``QueryAll.width``); while nobody knows it, on the line going quiet
(``final``), taking the longest frame that checks out. 24-channel boards put channels 1-8
in the last data byte, 50-channel ones in the first: the default follows the width
(``byte_order``), BoardConfig.status_byte_order overrides it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Self

from firmware_bridge.checksums import xor8
from firmware_bridge.errors import ConfigError
from firmware_bridge.protocols.base import (
    TURNAROUND_GAP_CHARS,
    Command,
    Frame,
    LockProtocol,
    Request,
    bits,
    pack_bits,
)

if TYPE_CHECKING:
    from firmware_bridge.config import BoardConfig

UNLOCK_HEAD, QUERY_HEAD, REPORT_HEAD = 0x8A, 0x80, 0x82
BATCH_HEAD, HOLD_HEAD, RELEASE_HEAD = 0x90, 0x9A, 0x9B
UNLOCK_CMD, QUERY_CMD = 0x11, 0x33
ST_HIGH = 0x11
BYTE = range(0x100)
CHANNEL = range(1, 0x100)  # CH 00 means "all" in a query
MAX_DATA = 8  # up to 64 inputs in a query-all reply
BATCH_BYTES = 3  # S1..S3: the batch mask covers channels 1-24
LAST_FIRST_UP_TO = 24  # boards this wide put channels 1-8 last; wider ones first


def byte_order(width: int, configured: str | None = None) -> str:
    """Which data byte of a ``width``-input reply holds channels 1-8."""
    if configured is not None:
        return configured
    return "last" if width <= LAST_FIRST_UP_TO else "first"


class BccFrame(Frame):
    """A five-byte ``HEAD BOARD CH X BCC`` frame; ``CMD`` fixes X where the kind has one."""

    HEAD: ClassVar[int]
    CMD: ClassVar[int | None] = None
    ALL_CHANNELS: ClassVar[bool] = False  # CH must be 00 (query all) instead of 01..FF

    @classmethod
    def seal(cls, body: bytes) -> bytes:
        return body + bytes([xor8(body)])

    @classmethod
    def match(cls, buffer: bytes, final: bool = False) -> int | None:
        if buffer[0] != cls.HEAD:
            return None
        if len(buffer) > 2 and (buffer[2] == 0) != cls.ALL_CHANNELS:
            return None
        if cls.CMD is not None and len(buffer) > 3 and buffer[3] != cls.CMD:
            return None
        return 5


@dataclass(frozen=True)
class BccChannelRequest(BccFrame, Request):
    RANGES = {"board": BYTE, "channel": CHANNEL}
    board: int
    channel: int

    def pack(self) -> bytes:
        return self.seal(bytes([self.HEAD, self.board, self.channel, self.CMD]))

    @classmethod
    def unpack(cls, frame: bytes) -> Self:
        return cls(board=frame[1], channel=frame[2])

    def answered_by(self, reply: Frame) -> bool:
        return super().answered_by(reply) and reply.channel == self.channel


@dataclass(frozen=True)
class BccChannelReply(BccFrame):
    RANGES = {"board": BYTE, "channel": CHANNEL, "state": BYTE}
    board: int
    channel: int
    state: int  # ST: 00 low, 11 high

    @property
    def level(self) -> int:
        return int(self.state != 0)

    def pack(self) -> bytes:
        return self.seal(bytes([self.HEAD, self.board, self.channel, self.state]))

    @classmethod
    def unpack(cls, frame: bytes) -> Self:
        return cls(board=frame[1], channel=frame[2], state=frame[3])


class UnlockReply(BccChannelReply):
    HEAD = UNLOCK_HEAD


class ChannelStateReply(BccChannelReply):
    HEAD = QUERY_HEAD


class DoorReport(BccChannelReply):
    """A door's input changed; pushed by the board without being asked."""

    HEAD = REPORT_HEAD


class Unlock(BccChannelRequest):
    HEAD = UNLOCK_HEAD
    CMD = UNLOCK_CMD
    REPLIES = (UnlockReply,)
    WHAT = "an unlock"


class KeepPowerOn(BccChannelRequest):
    HEAD = HOLD_HEAD
    CMD = UNLOCK_CMD
    WHAT = "a keep-power-on"


class KeepPowerOff(BccChannelRequest):
    HEAD = RELEASE_HEAD
    CMD = UNLOCK_CMD
    WHAT = "a keep-power-off"


class QueryOne(BccChannelRequest):
    HEAD = QUERY_HEAD
    CMD = QUERY_CMD
    REPLIES = (ChannelStateReply,)
    WHAT = "a channel query"


@dataclass(frozen=True)
class BccBoardRequest(BccFrame, Request):
    """A request to the whole board: CH is 00."""

    ALL_CHANNELS = True
    RANGES = {"board": BYTE}
    board: int

    def pack(self) -> bytes:
        return self.seal(bytes([self.HEAD, self.board, 0x00, self.CMD]))

    @classmethod
    def unpack(cls, frame: bytes) -> Self:
        return cls(board=frame[1])


class UnlockAll(BccBoardRequest):
    HEAD = UNLOCK_HEAD
    CMD = UNLOCK_CMD
    WHAT = "an open-all"


@dataclass(frozen=True)
class BatchUnlock(Request):
    """``90 BOARD S1 S2 S3 BCC``: every channel whose bit is set, in one frame."""

    HEAD = BATCH_HEAD
    WHAT = "a batch unlock"
    RANGES = {"board": BYTE}
    board: int
    mask: bytes = bytes(BATCH_BYTES)  # S1 first: bit 0 of S1 is channel 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.mask) != BATCH_BYTES:
            raise ConfigError(f"an 8A batch unlock carries {BATCH_BYTES} mask bytes")

    @classmethod
    def seal(cls, body: bytes) -> bytes:
        return body + bytes([xor8(body)])

    @classmethod
    def match(cls, buffer: bytes, final: bool = False) -> int | None:
        return 2 + BATCH_BYTES + 1 if buffer[0] == cls.HEAD else None

    def pack(self) -> bytes:
        return self.seal(bytes([self.HEAD, self.board, *self.mask]))

    @classmethod
    def unpack(cls, frame: bytes) -> Self:
        return cls(board=frame[1], mask=frame[2:-1])

    @property
    def channels(self) -> list[int]:
        return [i + 1 for i, level in enumerate(bits(self.mask)) if level]


@dataclass(frozen=True)
class BoardStateReply(Frame):
    """``80 BOARD Sn..S1 33 BCC``: data as on the wire, one byte per 8 inputs. ``DATA`` is
    the number of data bytes for kinds made by ``sized``; None frames on silence."""

    HEAD = QUERY_HEAD
    DATA: ClassVar[int | None] = None
    LEAST: ClassVar[int] = 1  # fewest data bytes a reply framed on silence may carry
    ENDS_ON_SILENCE = True
    RANGES = {"board": BYTE}
    board: int
    data: bytes = bytes(3)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= len(self.data) <= MAX_DATA:
            raise ConfigError(f"an 8A status reply carries 1..{MAX_DATA} data bytes")
        if self.DATA is not None and len(self.data) != self.DATA:
            raise ConfigError(f"this 8A status reply carries {self.DATA} data bytes")

    @staticmethod
    @functools.cache
    def sized(data_bytes: int) -> type[BoardStateReply]:
        """The reply kind of a board whose replies carry ``data_bytes`` data bytes."""
        if not 1 <= data_bytes <= MAX_DATA:
            raise ConfigError(f"an 8A status reply carries 1..{MAX_DATA} data bytes")
        name = f"BoardStateReply{data_bytes * 8}"
        attrs = {"DATA": data_bytes, "ENDS_ON_SILENCE": False, "__module__": __name__}
        return type(name, (BoardStateReply,), attrs)

    @staticmethod
    @functools.cache
    def at_least(data_bytes: int) -> type[BoardStateReply]:
        """The reply kind of a board of unknown width that has at least ``data_bytes`` data
        bytes (its wired channels say so): a shorter frame that checks out is the front of
        the reply cut short by a pause on the line, not the reply."""
        if not 1 <= data_bytes <= MAX_DATA:
            raise ConfigError(f"an 8A status reply carries 1..{MAX_DATA} data bytes")
        if data_bytes == 1:
            return BoardStateReply
        name = f"BoardStateReplyAtLeast{data_bytes * 8}"
        return type(name, (BoardStateReply,), {"LEAST": data_bytes, "__module__": __name__})

    @classmethod
    def seal(cls, body: bytes) -> bytes:
        return body + bytes([xor8(body)])

    @classmethod
    def match(cls, buffer: bytes, final: bool = False) -> int | None:
        if buffer[0] != cls.HEAD:
            return None
        if cls.DATA is not None:
            end = 2 + cls.DATA + 2
            return None if len(buffer) > end - 2 and buffer[end - 2] != QUERY_CMD else end
        # Length unknown: decide only when no more bytes can belong to it, then take the
        # longest frame that checks out (a shorter one may be the front of the real reply).
        longest = 2 + MAX_DATA + 2
        if len(buffer) < longest and not final:
            return 0
        for end in range(min(len(buffer), longest), 2 + cls.LEAST + 1, -1):
            if buffer[end - 2] == QUERY_CMD and cls.sealed(buffer[:end]):
                return end
        return None

    def pack(self) -> bytes:
        return self.seal(bytes([self.HEAD, self.board, *self.data, QUERY_CMD]))

    @classmethod
    def unpack(cls, frame: bytes) -> Self:
        return cls(board=frame[1], data=frame[2:-2])


@dataclass(frozen=True)
class QueryAll(BccBoardRequest):
    HEAD = QUERY_HEAD
    CMD = QUERY_CMD
    REPLIES = (BoardStateReply,)
    WHAT = "a status query"
    # Inputs the board's reply carries, when known; not on the wire.
    width: int | None = field(default=None, compare=False)
    # While the width is unknown: inputs the reply carries at least (the wired channels).
    least: int = field(default=1, compare=False)

    def expected(self) -> tuple[type[Frame], ...]:
        if self.width is None:
            return (BoardStateReply.at_least(-(-self.least // 8)),)
        return (BoardStateReply.sized(-(-self.width // 8)),)


class Bcc8a(LockProtocol):
    name = "bcc-8a"
    baud = 9600
    response_timeout = 0.5
    gap_chars = TURNAROUND_GAP_CHARS
    addresses = BYTE
    scan_addresses = range(0, 32)
    max_channels = MAX_DATA * 8
    default_channels = None  # as many as the board reports
    has_sensors = False
    pulse_ms = 300  # DESIGN.md §4: 300 ms on 8A boards
    channel_base = 1  # CH 03 is channel 3
    commands = frozenset(
        {
            Command.UNLOCK,
            Command.UNLOCK_ALL,
            Command.UNLOCK_MANY,
            Command.KEEP_POWER,
            Command.QUERY_ONE,
            Command.QUERY_ALL,
        }
    )
    starts = bytes([UNLOCK_HEAD, QUERY_HEAD, REPORT_HEAD, BATCH_HEAD, HOLD_HEAD, RELEASE_HEAD])
    REQUESTS = (Unlock, UnlockAll, BatchUnlock, KeepPowerOn, KeepPowerOff, QueryOne, QueryAll)
    REPLIES = (UnlockReply, ChannelStateReply, BoardStateReply)
    NOTICES = (DoorReport,)

    def unlock(self, board: int, wire_channel: int, pulse_ms: int) -> Request:
        return Unlock(board, wire_channel)

    def unlock_all(self, board: int) -> Request:
        return UnlockAll(board)

    def unlock_many(self, board: int, wire_channels: Sequence[int]) -> Request:
        top = BATCH_BYTES * 8
        wrong = [ch for ch in wire_channels if not 1 <= ch <= top]
        if wrong or not wire_channels:
            raise ConfigError(f"an 8A batch unlock takes channels 1..{top}, not {wrong or '[]'}")
        levels = [int(ch in wire_channels) for ch in range(1, top + 1)]
        return BatchUnlock(board, pack_bits(levels, BATCH_BYTES))

    def keep_power(self, board: int, wire_channel: int, on: bool) -> Request:
        return (KeepPowerOn if on else KeepPowerOff)(board, wire_channel)

    def query_one(self, board: int, wire_channel: int) -> Request:
        return QueryOne(board, wire_channel)

    def query_all(self, board: int, channels: int, reply_width: int | None = None) -> Request:
        # ``channels`` is the board's configured lock count, or max_channels when nobody
        # said (then nothing is known): its reply carries at least that many inputs.
        least = channels if 1 <= channels < self.max_channels else 1
        return QueryAll(board, width=reply_width, least=least)

    def reported_input(self, notice: Frame) -> tuple[int, int] | None:
        return (notice.channel, notice.level) if isinstance(notice, DoorReport) else None

    def reply_width(self, reply: Frame) -> int | None:
        return len(reply.data) * 8 if isinstance(reply, BoardStateReply) else None

    def inputs(self, reply: Frame, config: BoardConfig) -> tuple[list[int], list[int] | None]:
        assert isinstance(reply, BoardStateReply)
        order = byte_order(len(reply.data) * 8, config.status_byte_order)
        return bits(reply.data[::-1] if order == "last" else reply.data), None

    def channel_inputs(
        self, request: Request, reply: Frame, config: BoardConfig, channel: int
    ) -> tuple[int, int | None] | None:
        assert isinstance(reply, ChannelStateReply)
        return reply.level, None
