"""Kerong CU16 / CU48 / CU48B lock boards, master side (DESIGN.md §4, from open Kerong drivers).

cu16:  ``02 ADDR CMD 03 SUM`` with ADDR = board<<4 | (lock-1); CMD 30 status, 31 unlock,
       33 unlock all; reply ``02 ADDR 35 L1-8 L9-16 IR1-8 IR9-16 03 SUM``.
cu48:  ``02 ADDR LOCK CMD 03 SUM`` with LOCK 0-based; CMD 50 query, 51 unlock;
       reply ``02 ADDR 00 65 D1..D6 03 SUM``.
cu48b: as cu48 with CMD 60/61; reply ``02 ADDR 00 75 L1..L6 S1..S6 03 SUM``.
SUM is the low byte of the sum of every preceding byte.

Whether a board answers an unlock with its status frame or stays silent differs between
drivers (BoardConfig.answers_unlock). CMD 37 (set pulse time) is not built: no public driver
shows its argument bytes, so the pulse length is whatever the board was set to.

Query-one is the status query: every reply carries all the board's locks, and no public
driver shows a per-lock query (the cu48 LOCK byte is 00 in queries, 30 in one cu48b driver,
and the reply is the same whole-board frame either way), so the bus picks the channel out
of the board's status.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Self

from firmware_bridge.checksums import sum8
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

STX, ETX = 0x02, 0x03
BYTE = range(0x100)
NIBBLE = range(0x10)


class KerongFrame(Frame):
    """Fixed-length ``02 ... 03 SUM`` frame told apart by the command byte at ``CMD_AT``."""

    LENGTH: ClassVar[int]
    CMD_AT: ClassVar[int]
    CMD: ClassVar[int]
    FIXED: ClassVar[dict[int, int]] = {}  # other bytes every frame of this kind has

    @classmethod
    def seal(cls, body: bytes) -> bytes:
        return body + bytes([sum8(body)])

    @classmethod
    def match(cls, buffer: bytes) -> int | None:
        if buffer[0] != STX:
            return None
        fixed = {cls.CMD_AT: cls.CMD, cls.LENGTH - 2: ETX, **cls.FIXED}
        for at, value in fixed.items():
            if at < len(buffer) and buffer[at] != value:
                return None
        return cls.LENGTH


# -- CU16 ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cu16Request(KerongFrame, Request):
    LENGTH = 5
    CMD_AT = 2
    RANGES = {"board": NIBBLE, "lock": NIBBLE}
    board: int
    lock: int = 0  # 0-based lock index (the low nibble); only unlock uses it

    def pack(self) -> bytes:
        return self.seal(struct.pack("4B", STX, self.board << 4 | self.lock, self.CMD, ETX))

    @classmethod
    def unpack(cls, frame: bytes) -> Self:
        return cls(board=frame[1] >> 4, lock=frame[1] & 0x0F)


@dataclass(frozen=True)
class Cu16StatusReply(KerongFrame):
    LENGTH = 9
    CMD_AT = 2
    CMD = 0x35
    RANGES = {"address": BYTE}
    address: int  # the ADDR byte, echoed from the request (board in the high nibble)
    locks: bytes = bytes(2)  # L1-8, L9-16
    sensors: bytes = bytes(2)  # IR1-8, IR9-16

    @property
    def board(self) -> int:
        return self.address >> 4

    def pack(self) -> bytes:
        return self.seal(
            struct.pack("3B2s2sB", STX, self.address, self.CMD, self.locks, self.sensors, ETX)
        )

    @classmethod
    def unpack(cls, frame: bytes) -> Self:
        return cls(address=frame[1], locks=frame[3:5], sensors=frame[5:7])


class Cu16Status(Cu16Request):
    CMD = 0x30
    WHAT = "a status query"
    REPLIES = (Cu16StatusReply,)


class Cu16Unlock(Cu16Request):
    CMD = 0x31
    WHAT = "an unlock"
    REPLIES = (Cu16StatusReply,)


class Cu16UnlockAll(Cu16Request):
    CMD = 0x33
    WHAT = "an unlock-all"
    REPLIES = (Cu16StatusReply,)


# -- CU48 / CU48B -------------------------------------------------------------------------


@dataclass(frozen=True)
class Cu48Request(KerongFrame, Request):
    LENGTH = 6
    CMD_AT = 3
    RANGES = {"board": BYTE, "lock": BYTE}
    board: int
    lock: int = 0  # 0-based for unlock; queries send 00 (one cu48b driver sends 30)

    def pack(self) -> bytes:
        return self.seal(struct.pack("5B", STX, self.board, self.lock, self.CMD, ETX))

    @classmethod
    def unpack(cls, frame: bytes) -> Self:
        return cls(board=frame[1], lock=frame[2])


@dataclass(frozen=True)
class Cu48StatusReply(KerongFrame):
    DATA = 6
    LENGTH = 4 + DATA + 2
    CMD_AT = 3
    CMD = 0x65
    FIXED = {2: 0x00}
    RANGES = {"board": BYTE}
    board: int
    locks: bytes = bytes(6)  # D1 holds locks 1-8

    def pack(self) -> bytes:
        return self.seal(bytes([STX, self.board, 0x00, self.CMD, *self.locks, ETX]))

    @classmethod
    def unpack(cls, frame: bytes) -> Self | None:
        return cls(board=frame[1], locks=frame[4:10])


@dataclass(frozen=True)
class Cu48bStatusReply(KerongFrame):
    LENGTH = 4 + 12 + 2
    CMD_AT = 3
    CMD = 0x75
    FIXED = {2: 0x00}
    RANGES = {"board": BYTE}
    board: int
    locks: bytes = bytes(6)  # L1 holds locks 1-8
    sensors: bytes = bytes(6)

    def pack(self) -> bytes:
        return self.seal(bytes([STX, self.board, 0x00, self.CMD, *self.locks, *self.sensors, ETX]))

    @classmethod
    def unpack(cls, frame: bytes) -> Self | None:
        return cls(board=frame[1], locks=frame[4:10], sensors=frame[10:16])


class Cu48Query(Cu48Request):
    CMD = 0x50
    WHAT = "a status query"
    REPLIES = (Cu48StatusReply,)


class Cu48Unlock(Cu48Request):
    CMD = 0x51
    WHAT = "an unlock"
    REPLIES = (Cu48StatusReply,)


class Cu48bQuery(Cu48Request):
    CMD = 0x60
    WHAT = "a status query"
    REPLIES = (Cu48bStatusReply,)


class Cu48bUnlock(Cu48Request):
    CMD = 0x61
    WHAT = "an unlock"
    REPLIES = (Cu48bStatusReply,)


# -- protocols ----------------------------------------------------------------------------


class KerongCu16(LockProtocol):
    name = "kerong-cu16"
    baud = 19200
    response_timeout = 0.5
    gap_chars = TURNAROUND_GAP_CHARS
    addresses = NIBBLE  # the board number is the high nibble of ADDR
    scan_addresses = NIBBLE
    max_channels = 16
    default_channels = 16
    has_sensors = True
    pulse_ms = 500
    channel_base = 0  # the low nibble is lock-1
    commands = frozenset(
        {Command.UNLOCK, Command.UNLOCK_ALL, Command.QUERY_ONE, Command.QUERY_ALL}
    )
    starts = bytes([STX])
    REQUESTS = (Cu16Status, Cu16Unlock, Cu16UnlockAll)
    REPLIES = (Cu16StatusReply,)

    def unlock(self, board: int, wire_channel: int, pulse_ms: int) -> Request:
        return Cu16Unlock(board, wire_channel)

    def unlock_all(self, board: int) -> Request:
        return Cu16UnlockAll(board)

    def query_one(self, board: int, wire_channel: int) -> Request:
        return Cu16Status(board)

    def query_all(self, board: int, channels: int) -> Request:
        return Cu16Status(board)

    def inputs(self, reply: Frame, config: BoardConfig) -> tuple[list[int], list[int] | None]:
        assert isinstance(reply, Cu16StatusReply)
        return bits(reply.locks), bits(reply.sensors)


class KerongCu48(LockProtocol):
    name = "kerong-cu48"
    baud = 19200
    response_timeout = 0.5
    gap_chars = TURNAROUND_GAP_CHARS
    addresses = BYTE
    scan_addresses = range(0, 32)
    max_channels = 48
    default_channels = 48
    has_sensors = False
    pulse_ms = 500
    channel_base = 0  # LOCK is 0-based
    commands = frozenset({Command.UNLOCK, Command.QUERY_ONE, Command.QUERY_ALL})
    starts = bytes([STX])
    REQUESTS: tuple[type[Request], ...] = (Cu48Query, Cu48Unlock)
    REPLIES: tuple[type[Frame], ...] = (Cu48StatusReply,)
    QUERY: type[Cu48Request] = Cu48Query
    UNLOCK: type[Cu48Request] = Cu48Unlock

    def unlock(self, board: int, wire_channel: int, pulse_ms: int) -> Request:
        return self.UNLOCK(board, wire_channel)

    def query_one(self, board: int, wire_channel: int) -> Request:
        return self.QUERY(board)

    def query_all(self, board: int, channels: int) -> Request:
        return self.QUERY(board)

    def inputs(self, reply: Frame, config: BoardConfig) -> tuple[list[int], list[int] | None]:
        assert isinstance(reply, Cu48StatusReply)
        return bits(reply.locks), None


class KerongCu48b(KerongCu48):
    name = "kerong-cu48b"
    has_sensors = True
    REQUESTS = (Cu48bQuery, Cu48bUnlock)
    REPLIES = (Cu48bStatusReply,)
    QUERY = Cu48bQuery
    UNLOCK = Cu48bUnlock

    def inputs(self, reply: Frame, config: BoardConfig) -> tuple[list[int], list[int] | None]:
        assert isinstance(reply, Cu48bStatusReply)
        return bits(reply.locks), bits(reply.sensors)
