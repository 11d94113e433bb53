"""Kerong CU16 / CU48 / CU48B lock boards, master side (DESIGN.md §4).

cu16:  ``02 ADDR CMD 03 SUM`` with ADDR = board<<4 | (lock-1); CMD 30 status, 31 unlock,
       33 unlock all; reply ``02 ADDR 35 L1-8 L9-16 IR1-8 IR9-16 03 SUM``. Set pulse time is
       ``02 ADDR 37 HI LO 03 SUM`` in 10 ms units (tracker issue 12, from a field driver).
cu48:  Kerong's "CU48 Protocol And Introduction" v2.1 (2020-03-23): ``02 ADDR LOCK CMD 03
       SUM``, ADDR 00-09 a board (DIP), 0A every board on the bus (each answers in turn);
       LOCK 00-2F lock 1-48, 30 every lock; CMD 50 query -> ``02 ADDR xx 65 D1..D6 03 SUM``
       where xx "need not be dealt with" (any value), 51 unlock -> no reply at all.
cu48b: no vendor document; two independent drivers agree on ``02 ADDR LOCK CMD 03 SUM`` with
       CMD 60/61 and reply ``02 ADDR 00 75 L1..L6 S1..S6 03 SUM``. A captured
       ``02 00 0A 77 ... 03 88`` frame has a valid sum and no known meaning (Cu48bUnknown77).
SUM is the low byte of the sum of every preceding byte.

Whether a board answers an unlock is BoardConfig.answers_unlock: the protocol's default
(``answers_unlock``) is the vendor's word for cu48 (silent) and what drivers show elsewhere.

Query-one is the status query: every reply carries all the board's locks, so the bus picks
the channel out of the board's status (the cu48 LOCK byte is 00 in queries; one cu48b driver
sends 30, and the reply is the same whole-board frame either way).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Self

from firmware_bridge.checksums import sum8
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

STX, ETX = 0x02, 0x03
BYTE = range(0x100)
NIBBLE = range(0x10)
PULSE_UNIT_MS = 10  # cu16 CMD 37 counts the pulse in 10 ms steps
PULSE_UNITS = range(1, 0x10000)  # HI LO
CU48_BROADCAST = 0x0A  # every CU48 on the bus (vendor document)
CU48_ALL_LOCKS = 0x30  # LOCK byte meaning every lock of the board (vendor document)


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
    def match(cls, buffer: bytes, final: bool = False) -> int | None:
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


@dataclass(frozen=True)
class Cu16PulseTime(KerongFrame, Request):
    """``02 ADDR 37 HI LO 03 SUM``: the board's lock pulse in 10 ms steps. We send the lock
    nibble 0; no reply is documented, so none is awaited."""

    LENGTH = 7
    CMD_AT = 2
    CMD = 0x37
    WHAT = "a pulse-time setting"
    RANGES = {"board": NIBBLE, "units": PULSE_UNITS}
    board: int
    units: int  # 10 ms steps

    @property
    def pulse_ms(self) -> int:
        return self.units * PULSE_UNIT_MS

    def pack(self) -> bytes:
        return self.seal(struct.pack(">3BH1B", STX, self.board << 4, self.CMD, self.units, ETX))

    @classmethod
    def unpack(cls, frame: bytes) -> Self | None:
        units = frame[3] << 8 | frame[4]
        return cls(board=frame[1] >> 4, units=units) if units else None


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
    """``02 ADDR xx 65 D1..D6 03 SUM``; D1 bit 0 is lock 1. The vendor document says the xx
    byte "doesn't need to be dealt with": boards put anything there, so any value is taken
    (and kept, so the frame packs back to the bytes it came from)."""

    LENGTH = 4 + 6 + 2
    CMD_AT = 3
    CMD = 0x65
    RANGES = {"board": BYTE, "lock_byte": BYTE}
    board: int
    locks: bytes = bytes(6)
    lock_byte: int = 0  # meaningless

    def pack(self) -> bytes:
        return self.seal(bytes([STX, self.board, self.lock_byte, self.CMD, *self.locks, ETX]))

    @classmethod
    def unpack(cls, frame: bytes) -> Self:
        return cls(board=frame[1], locks=frame[4:10], lock_byte=frame[2])


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
    def unpack(cls, frame: bytes) -> Self:
        return cls(board=frame[1], locks=frame[4:10], sensors=frame[10:16])


@dataclass(frozen=True)
class Cu48bUnknown77(KerongFrame):
    """``02 ADDR xx 77 <12 bytes> 03 SUM``, as long as a status reply; captured from a cu48b
    (AshurkovAV/KerongConsole) with a valid sum and no documented meaning. Noted, not used."""

    UNKNOWN = True
    LENGTH = 4 + 12 + 2
    CMD_AT = 3
    CMD = 0x77
    RANGES = {"board": BYTE, "lock_byte": BYTE}
    board: int
    lock_byte: int = 0
    data: bytes = bytes(12)

    def pack(self) -> bytes:
        return self.seal(bytes([STX, self.board, self.lock_byte, self.CMD, *self.data, ETX]))

    @classmethod
    def unpack(cls, frame: bytes) -> Self:
        return cls(board=frame[1], lock_byte=frame[2], data=frame[4:16])


class Cu48Query(Cu48Request):
    CMD = 0x50
    WHAT = "a status query"
    REPLIES = (Cu48StatusReply,)


class Cu48Unlock(Cu48Request):
    CMD = 0x51
    WHAT = "an unlock"
    RANGES = {"board": BYTE, "lock": range(0, CU48_ALL_LOCKS)}  # LOCK 00-2F: lock 1-48
    # Only if a board is configured to answer (BoardConfig.answers_unlock): the vendor's
    # boards do not.
    REPLIES = (Cu48StatusReply,)

    @classmethod
    def match(cls, buffer: bytes, final: bool = False) -> int | None:
        if len(buffer) > 2 and buffer[2] == CU48_ALL_LOCKS:
            return None  # that is Cu48UnlockAll
        return super().match(buffer, final)


@dataclass(frozen=True)
class Cu48UnlockAll(Cu48Request):
    CMD = 0x51
    FIXED = {2: CU48_ALL_LOCKS}
    WHAT = "an unlock-all"
    RANGES = {"board": BYTE, "lock": range(CU48_ALL_LOCKS, CU48_ALL_LOCKS + 1)}
    REPLIES = (Cu48StatusReply,)
    lock: int = CU48_ALL_LOCKS


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
    # One driver sends ADDR nibble F to every board: 15 is tried only when asked for.
    scan_addresses = range(0, 15)
    max_channels = 16
    default_channels = 16
    has_sensors = True
    pulse_ms = 500
    channel_base = 0  # the low nibble is lock-1
    commands = frozenset(
        {
            Command.UNLOCK,
            Command.UNLOCK_ALL,
            Command.PULSE_TIME,
            Command.QUERY_ONE,
            Command.QUERY_ALL,
        }
    )
    starts = bytes([STX])
    REQUESTS = (Cu16Status, Cu16Unlock, Cu16UnlockAll, Cu16PulseTime)
    REPLIES = (Cu16StatusReply,)

    def unlock(self, board: int, wire_channel: int, pulse_ms: int) -> Request:
        return Cu16Unlock(board, wire_channel)

    def unlock_all(self, board: int) -> Request:
        return Cu16UnlockAll(board)

    def pulse_time(self, board: int, pulse_ms: int) -> Request:
        # Rounded up: a lock is never driven shorter than it was configured for.
        units = -(-pulse_ms // PULSE_UNIT_MS) if isinstance(pulse_ms, int) else None
        if isinstance(pulse_ms, bool) or units not in PULSE_UNITS:
            top = PULSE_UNITS.stop - 1
            raise ConfigError(
                f"{self.name} pulse time must be 1..{top * PULSE_UNIT_MS} ms, not {pulse_ms!r}"
            )
        return Cu16PulseTime(board, units)

    def query_one(self, board: int, wire_channel: int) -> Request:
        return Cu16Status(board)

    def query_all(self, board: int, channels: int, reply_width: int | None = None) -> Request:
        return Cu16Status(board)

    def inputs(self, reply: Frame, config: BoardConfig) -> tuple[list[int], list[int] | None]:
        assert isinstance(reply, Cu16StatusReply)
        return bits(reply.locks), bits(reply.sensors)


class KerongCu48(LockProtocol):
    name = "kerong-cu48"
    baud = 19200
    response_timeout = 0.5
    gap_chars = TURNAROUND_GAP_CHARS
    addresses = range(0, 10)  # DIP 00-09; 0A is the broadcast, never a board
    scan_addresses = range(0, 10)
    broadcast: int | None = CU48_BROADCAST
    max_channels = 48
    default_channels = 48
    has_sensors = False
    pulse_ms = 500
    answers_unlock = False  # vendor document: CMD 51 has no reply
    channel_base = 0  # LOCK is 0-based
    commands = frozenset({Command.UNLOCK, Command.UNLOCK_ALL, Command.QUERY_ONE, Command.QUERY_ALL})
    starts = bytes([STX])
    REQUESTS: tuple[type[Request], ...] = (Cu48Query, Cu48Unlock, Cu48UnlockAll)
    REPLIES: tuple[type[Frame], ...] = (Cu48StatusReply,)
    QUERY: type[Cu48Request] = Cu48Query
    UNLOCK: type[Cu48Request] = Cu48Unlock

    def unlock(self, board: int, wire_channel: int, pulse_ms: int) -> Request:
        return self.UNLOCK(board, wire_channel)

    def unlock_all(self, board: int) -> Request:
        return Cu48UnlockAll(board)

    def query_one(self, board: int, wire_channel: int) -> Request:
        return self.QUERY(board)

    def query_all(self, board: int, channels: int, reply_width: int | None = None) -> Request:
        return self.QUERY(board)

    def inputs(self, reply: Frame, config: BoardConfig) -> tuple[list[int], list[int] | None]:
        assert isinstance(reply, Cu48StatusReply)
        return bits(reply.locks), None


class KerongCu48b(KerongCu48):
    name = "kerong-cu48b"
    addresses = BYTE  # no document limits it; drivers send any byte
    scan_addresses = range(0, 32)
    broadcast = None
    has_sensors = True
    answers_unlock = True  # what the drivers it was written from expect
    commands = frozenset({Command.UNLOCK, Command.QUERY_ONE, Command.QUERY_ALL})
    REQUESTS = (Cu48bQuery, Cu48bUnlock)
    REPLIES = (Cu48bStatusReply,)
    NOTICES = (Cu48bUnknown77,)
    QUERY = Cu48bQuery
    UNLOCK = Cu48bUnlock

    def unlock_all(self, board: int) -> Request:
        raise self._lacks(Command.UNLOCK_ALL)  # no driver shows LOCK 30 on a cu48b

    def inputs(self, reply: Frame, config: BoardConfig) -> tuple[list[int], list[int] | None]:
        assert isinstance(reply, Cu48bStatusReply)
        return bits(reply.locks), bits(reply.sensors)
