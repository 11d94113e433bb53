"""Generic RS-485 "8A" lock boards, master side (DESIGN.md §4, from open generic-board drivers;
the "锁控板通讯协议和规格书" spec at https://blog.csdn.net/u012909822/article/details/147892413
shows the same unlock, open-all and query-one frames).

unlock     ``8A BOARD CH 11 BCC`` -> ``8A BOARD CH ST BCC``
open all   ``8A BOARD 00 11 BCC`` (CH 00 = every lock); no reply format is documented, so
           the bus does not wait for one and reads the board's status afterwards instead
query one  ``80 BOARD CH 33 BCC`` -> ``80 BOARD CH ST BCC``
query all  ``80 BOARD 00 33 BCC`` -> ``80 BOARD Sn..S1 33 BCC``
BCC is the XOR of every preceding byte.

The query-all reply is as long as the *board* is wide, whatever we were told about it, so
its length is read from the frame: the first ``33 BCC`` that checks out ends it. By default
the last data byte holds channels 1-8 (the DESIGN vector); BoardConfig.status_byte_order
covers boards that put it first. ST is 00 for a low input and non-zero (11) for a high one.

Known ambiguities of the format, settled by telling ``decode`` which reply we wait for:
a query-one reply can look like a 16/24-channel query-all reply with a lucky checksum, and
an echoed request looks like a reply (query-all = 8-channel reply with all inputs low).
"""

from __future__ import annotations

from dataclasses import dataclass
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
)

if TYPE_CHECKING:
    from firmware_bridge.config import BoardConfig

UNLOCK_HEAD, QUERY_HEAD = 0x8A, 0x80
UNLOCK_CMD, QUERY_CMD = 0x11, 0x33
ST_HIGH = 0x11
BYTE = range(0x100)
CHANNEL = range(1, 0x100)  # CH 00 means "all" in a query
MAX_DATA = 8  # up to 64 inputs in a query-all reply


class BccFrame(Frame):
    """A five-byte ``HEAD BOARD CH X BCC`` frame; ``CMD`` fixes X where the kind has one."""

    HEAD: ClassVar[int]
    CMD: ClassVar[int | None] = None
    ALL_CHANNELS: ClassVar[bool] = False  # CH must be 00 (query all) instead of 01..FF

    @classmethod
    def seal(cls, body: bytes) -> bytes:
        return body + bytes([xor8(body)])

    @classmethod
    def match(cls, buffer: bytes) -> int | None:
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


class Unlock(BccChannelRequest):
    HEAD = UNLOCK_HEAD
    CMD = UNLOCK_CMD
    REPLIES = (UnlockReply,)
    WHAT = "an unlock"


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
    REPLIES = ()  # undocumented: nothing is awaited (see the module docstring)
    WHAT = "an open-all"


@dataclass(frozen=True)
class BoardStateReply(Frame):
    """``80 BOARD Sn..S1 33 BCC``: data as on the wire, one byte per 8 inputs."""

    HEAD = QUERY_HEAD
    RANGES = {"board": BYTE}
    board: int
    data: bytes = bytes(3)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= len(self.data) <= MAX_DATA:
            raise ConfigError(f"an 8A status reply carries 1..{MAX_DATA} data bytes")

    @classmethod
    def seal(cls, body: bytes) -> bytes:
        return body + bytes([xor8(body)])

    @classmethod
    def match(cls, buffer: bytes) -> int | None:
        if buffer[0] != cls.HEAD:
            return None
        longest = 2 + MAX_DATA + 2
        for end in range(5, min(len(buffer), longest) + 1):
            if buffer[end - 2] == QUERY_CMD and cls.sealed(buffer[:end]):
                return end
        return 0 if len(buffer) < longest else None

    def pack(self) -> bytes:
        return self.seal(bytes([self.HEAD, self.board, *self.data, QUERY_CMD]))

    @classmethod
    def unpack(cls, frame: bytes) -> Self:
        return cls(board=frame[1], data=frame[2:-2])


class QueryAll(BccBoardRequest):
    HEAD = QUERY_HEAD
    CMD = QUERY_CMD
    REPLIES = (BoardStateReply,)
    WHAT = "a status query"


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
        {Command.UNLOCK, Command.UNLOCK_ALL, Command.QUERY_ONE, Command.QUERY_ALL}
    )
    starts = bytes([UNLOCK_HEAD, QUERY_HEAD])
    REQUESTS = (Unlock, UnlockAll, QueryOne, QueryAll)
    REPLIES = (UnlockReply, ChannelStateReply, BoardStateReply)

    def unlock(self, board: int, wire_channel: int, pulse_ms: int) -> Request:
        return Unlock(board, wire_channel)

    def unlock_all(self, board: int) -> Request:
        return UnlockAll(board)

    def query_one(self, board: int, wire_channel: int) -> Request:
        return QueryOne(board, wire_channel)

    def query_all(self, board: int, channels: int) -> Request:
        return QueryAll(board)

    def inputs(self, reply: Frame, config: BoardConfig) -> tuple[list[int], list[int] | None]:
        assert isinstance(reply, BoardStateReply)
        data = reply.data[::-1] if config.status_byte_order == "last" else reply.data
        return bits(data), None

    def channel_inputs(
        self, request: Request, reply: Frame, config: BoardConfig, channel: int
    ) -> tuple[int, int | None] | None:
        assert isinstance(reply, ChannelStateReply)
        return reply.level, None
