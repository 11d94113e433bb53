"""Waveshare-style Modbus RTU relay boards driving locks, master side (DESIGN.md §4, from the
Waveshare Modbus RTU Relay wiki and open drivers for it).

unlock      FC05 "flash on": coil 0x0200 + ch0, value = pulse length in 100 ms steps; the
            board closes the relay for that long and echoes the request.
door inputs FC02 read discrete inputs from 0: bit (i % 8) of data byte i // 8 is input i+1.
A refused request comes back as ``ADDR 80|FC CODE CRC`` (a Modbus exception).

pymodbus' WriteSingleCoilRequest only allows FF00/0000, so the frames are built here, with
the CRC-16/Modbus computed by pymodbus (firmware_bridge.checksums.crc16_modbus). Modbus
RTU has no start byte: a frame is found by address, function and length, then the CRC.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Self

from firmware_bridge.checksums import crc16_modbus
from firmware_bridge.errors import ConfigError
from firmware_bridge.protocols.base import Command, Frame, LockProtocol, Request, bits

if TYPE_CHECKING:
    from firmware_bridge.config import BoardConfig

UNICAST = range(1, 248)  # 0 is broadcast (never answered), 248..255 reserved
WORD = range(0x10000)
READ_INPUTS, WRITE_COIL = 0x02, 0x05
FLASH_BASE = 0x0200
EXCEPTIONS = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "device failure",
    0x06: "device busy",
}


class ModbusFrame(Frame):
    CHECK_LEN = 2
    FUNCTION: ClassVar[int]

    @classmethod
    def seal(cls, body: bytes) -> bytes:
        return body + crc16_modbus(body)

    @classmethod
    def _head_ok(cls, buffer: bytes, function: int) -> bool:
        return buffer[0] in UNICAST and (len(buffer) < 2 or buffer[1] == function)


@dataclass(frozen=True)
class ReadInputs(ModbusFrame, Request):
    """FC02 ``ADDR 02 START COUNT CRC``."""

    FUNCTION = READ_INPUTS
    WHAT = "an input read (FC02)"
    RANGES = {"board": UNICAST, "start": WORD, "count": range(1, 2001)}
    board: int
    start: int = 0
    count: int = 8

    @classmethod
    def match(cls, buffer: bytes) -> int | None:
        return 8 if cls._head_ok(buffer, cls.FUNCTION) else None

    def pack(self) -> bytes:
        return self.seal(struct.pack(">BBHH", self.board, self.FUNCTION, self.start, self.count))

    @classmethod
    def unpack(cls, frame: bytes) -> Self | None:
        board, _, start, count = struct.unpack(">BBHH", frame[:6])
        if count not in cls.RANGES["count"]:
            return None
        return cls(board=board, start=start, count=count)

    def answered_by(self, reply: Frame) -> bool:
        if isinstance(reply, Inputs):
            return reply.board == self.board and len(reply.data) == -(-self.count // 8)
        return isinstance(reply, Refusal) and reply.answers(self)


@dataclass(frozen=True)
class WriteCoil(ModbusFrame, Request):
    """FC05 ``ADDR 05 COIL VALUE CRC``; the reply is the same frame, echoed."""

    FUNCTION = WRITE_COIL
    WHAT = "a coil write (FC05)"
    RANGES = {"board": UNICAST, "coil": WORD, "value": WORD}
    board: int
    coil: int
    value: int

    @classmethod
    def match(cls, buffer: bytes) -> int | None:
        return 8 if cls._head_ok(buffer, cls.FUNCTION) else None

    def pack(self) -> bytes:
        return self.seal(struct.pack(">BBHH", self.board, self.FUNCTION, self.coil, self.value))

    @classmethod
    def unpack(cls, frame: bytes) -> Self:
        board, _, coil, value = struct.unpack(">BBHH", frame[:6])
        return cls(board=board, coil=coil, value=value)

    def answered_by(self, reply: Frame) -> bool:
        if isinstance(reply, WriteCoil):
            return reply == self
        return isinstance(reply, Refusal) and reply.answers(self)


@dataclass(frozen=True)
class Inputs(ModbusFrame):
    """FC02 reply ``ADDR 02 N D1..Dn CRC``."""

    FUNCTION = READ_INPUTS
    RANGES = {"board": UNICAST}
    board: int
    data: bytes = b"\x00"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= len(self.data) <= 250:
            raise ConfigError("a Modbus input reply carries 1..250 data bytes")

    @classmethod
    def match(cls, buffer: bytes) -> int | None:
        if not cls._head_ok(buffer, cls.FUNCTION):
            return None
        if len(buffer) < 3:
            return 0
        count = buffer[2]
        return 5 + count if 1 <= count <= 250 else None

    def pack(self) -> bytes:
        return self.seal(bytes([self.board, self.FUNCTION, len(self.data), *self.data]))

    @classmethod
    def unpack(cls, frame: bytes) -> Self:
        return cls(board=frame[0], data=frame[3:-2])


@dataclass(frozen=True)
class Refusal(ModbusFrame):
    """Modbus exception reply ``ADDR 80|FC CODE CRC``."""

    RANGES = {"board": UNICAST, "function": range(0x81, 0x100), "code": range(0x100)}
    board: int
    function: int  # with the 0x80 bit set
    code: int

    @classmethod
    def match(cls, buffer: bytes) -> int | None:
        if buffer[0] not in UNICAST:
            return None
        if len(buffer) > 1 and buffer[1] < 0x81:
            return None
        return 5

    def pack(self) -> bytes:
        return self.seal(bytes([self.board, self.function, self.code]))

    @classmethod
    def unpack(cls, frame: bytes) -> Self:
        return cls(board=frame[0], function=frame[1], code=frame[2])

    def answers(self, request: ModbusFrame) -> bool:
        return self.board == request.board and self.function == 0x80 | request.FUNCTION

    def refusal(self) -> str:
        meaning = EXCEPTIONS.get(self.code, "unknown exception")
        return (
            f"Modbus exception {self.code:02X} ({meaning}) to function {self.function & 0x7F:02X}"
        )


ReadInputs.REPLIES = (Inputs, Refusal)
WriteCoil.REPLIES = (WriteCoil, Refusal)


class ModbusRelay(LockProtocol):
    name = "modbus-relay"
    baud = 9600
    response_timeout = 0.3
    gap_chars = 3.5 * 11 / 10  # Modbus RTU: 3.5 character times of 11 bits (spec, §2.5.1.1)
    addresses = UNICAST
    scan_addresses = range(1, 33)
    max_channels = 64
    default_channels = 8
    has_sensors = False
    pulse_ms = 500
    channel_base = 0  # coil 0x0200 + ch0
    commands = frozenset({Command.UNLOCK, Command.QUERY_ONE, Command.QUERY_ALL})
    starts = None
    REQUESTS = (ReadInputs, WriteCoil)
    REPLIES = (Inputs, WriteCoil, Refusal)

    def gap(self, baud: int) -> float:
        # The spec fixes the gap at 1.75 ms above 19200 baud instead of scaling it down.
        return super().gap(baud) if baud <= 19200 else 0.00175

    def unlock(self, board: int, wire_channel: int, pulse_ms: int) -> Request:
        steps = max(1, round(pulse_ms / 100))
        return WriteCoil(board, FLASH_BASE + wire_channel, steps)

    def query_one(self, board: int, wire_channel: int) -> Request:
        return ReadInputs(board, wire_channel, 1)

    def query_all(self, board: int, channels: int) -> Request:
        return ReadInputs(board, 0, channels)

    def inputs(self, reply: Frame, config: BoardConfig) -> tuple[list[int], list[int] | None]:
        assert isinstance(reply, Inputs)
        return bits(reply.data), None
