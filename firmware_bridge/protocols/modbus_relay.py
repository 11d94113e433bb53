"""Waveshare-style Modbus RTU relay boards driving locks, master side (DESIGN.md §4).

unlock      FC05 "flash on": coil 0x0200 + ch0, value = pulse length in 100 ms steps; the
            board closes the relay for that long and echoes the request (Waveshare wiki,
            https://www.waveshare.com/wiki/Modbus_RTU_Relay). The pulse is rounded *up* to
            the next step: a lock is never driven shorter than configured (250 ms -> 300).
door inputs FC02 read discrete inputs: bit (i % 8) of data byte i // 8 is input start+i+1.
            The relay-only board has no inputs; FC02 is the "Modbus RTU Relay (D)" board's
            (https://www.waveshare.com/wiki/Modbus_RTU_Relay_(D)), which has 8 of them.
A refused request comes back as ``ADDR 80|FC CODE CRC`` (a Modbus exception).

Framing and CRC are pymodbus' (checked against pymodbus 3.16): every frame is a pymodbus PDU
put on the wire by ``FramerRTU.buildFrame``, and a candidate frame found in the stream is
checked and decoded by ``FramerRTU.handleFrame`` with a ``DecodePDU`` of the right side
(server for requests, client for replies).

Two things pymodbus does not do for us, and why:

- FC05 with a pulse value. ``WriteSingleCoilRequest`` carries a bit, not a value: its
  ``encode`` sends FF00 for any truthy bit and its ``decode`` turns 0002 into ``[True]``, so
  "flash for 200 ms" would go out as "relay on" and an echo could not be checked. ``FlashCoil``
  below is a custom PDU with the raw 16-bit value, registered with our decoders.
- Resynchronising a stream. ``FramerRTU.handleFrame`` hunts for a start by function code and,
  when the CRC of what it found fails, consumes the whole buffer: fed
  ``FA FD 99 99 01 02 01 FB E0 0B`` it returns ``(10, None)``, losing the good reply after
  the garbage (FD reads as an exception function, that 5-byte "frame" fails its CRC, and
  everything goes with it). So the stream decoder (``LockProtocol.decode``) picks each
  candidate start and length itself, with pymodbus' own PDU tables
  (``lookupPduClass``/``calculateRtuFrameSize``), and hands ``handleFrame`` exactly one
  candidate at a time. Modbus RTU has no start byte, so candidates start at every unicast
  address byte.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Self

from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import ReadDiscreteInputsRequest, ReadDiscreteInputsResponse
from pymodbus.pdu.utils import pack_bitstring, unpack_bitstring

from firmware_bridge.errors import ConfigError
from firmware_bridge.protocols.base import Command, Frame, LockProtocol, Request, bits

if TYPE_CHECKING:
    from firmware_bridge.config import BoardConfig

UNICAST = range(1, 248)  # 0 is broadcast (never answered), 248..255 reserved
WORD = range(0x10000)
READ_INPUTS, WRITE_COIL = 0x02, 0x05
FLASH_BASE = 0x0200
FLASH_STEP_MS = 100
MAX_INPUT_BYTES = 250  # 2000 inputs, the most one FC02 request may ask for
EXCEPTIONS = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "device failure",
    0x06: "device busy",
}


class FlashCoil(ModbusPDU):
    """FC05 with its raw 16-bit value, request and echoed reply alike: FF00/0000 switch a
    relay on/off, and at coil 0x0200+ch0 a Waveshare board reads N as "on for N x 100 ms"."""

    function_code = WRITE_COIL
    rtu_frame_size = 8

    def __init__(
        self, address: int = 0, value: int = 0, dev_id: int = 0, transaction_id: int = 0
    ) -> None:
        super().__init__(dev_id=dev_id, transaction_id=transaction_id, address=address)
        self.value = value

    def encode(self) -> bytes:
        self.verifyAddress()
        return struct.pack(">HH", self.address, self.value)

    def decode(self, data: bytes) -> None:
        self.address, self.value = struct.unpack(">HH", data[:4])


def _framer(is_server: bool) -> FramerRTU:
    """An RTU framer whose PDU table has FlashCoil for FC05 (``register`` copies pymodbus'
    table into this decoder, so the library-wide table is left alone)."""
    decoder = DecodePDU(is_server)
    decoder.register(FlashCoil)
    return FramerRTU(decoder)


# pymodbus logs a WARNING for a frame whose CRC holds but whose fields it refuses (the
# simulator meets those in line noise). With no handler anywhere, Python's last-resort handler
# would print it on a command's stderr; applications that configure logging still get it.
logging.getLogger("pymodbus").addHandler(logging.NullHandler())

# Stateless once built, so one of each serves every bus and the simulator.
REQUEST_FRAMER = _framer(is_server=True)  # decodes what a master sends
REPLY_FRAMER = _framer(is_server=False)  # decodes what a board answers


def frame_size(framer: FramerRTU, buffer: bytes) -> int | None:
    """Length of the RTU frame ``buffer`` starts with, by pymodbus' PDU table: 0 if more
    bytes are needed to tell, None if no PDU of ``framer``'s side has that function code."""
    if len(buffer) < 2:
        return 0
    pdu_class = framer.decoder.lookupPduClass(buffer)
    if pdu_class is None:
        return None
    return pdu_class.calculateRtuFrameSize(buffer)


def crc_ok(frame: bytes) -> bool:
    return len(frame) >= FramerRTU.MIN_SIZE and FramerRTU.check_CRC(
        frame[:-2], int.from_bytes(frame[-2:], "big")
    )


def handle(framer: FramerRTU, frame: bytes) -> ModbusPDU | None:
    """The PDU in one whole candidate frame, decoded by pymodbus; None when the CRC fails or
    pymodbus refuses the fields (a count of 0, say)."""
    try:
        used, pdu = framer.handleFrame(frame, 0, 0)
    except ModbusIOException:
        return None
    return pdu if used == len(frame) else None


class ModbusFrame(Frame):
    CHECK_LEN = 2
    FUNCTION: ClassVar[int]
    FRAMER: ClassVar[FramerRTU]  # the side whose PDU table knows this kind
    PDU: ClassVar[type[ModbusPDU]]  # the pymodbus class this kind is

    @classmethod
    def sealed(cls, frame: bytes) -> bool:
        return crc_ok(frame)

    @classmethod
    def match(cls, buffer: bytes, final: bool = False) -> int | None:
        if buffer[0] not in UNICAST:
            return None
        if len(buffer) > 1 and not cls._function_ok(buffer[1]):
            return None
        size = frame_size(cls.FRAMER, buffer)
        if size is None or (size and not cls._size_ok(buffer, size)):
            return None
        return size

    @classmethod
    def _function_ok(cls, function: int) -> bool:
        return function == cls.FUNCTION

    @classmethod
    def _size_ok(cls, buffer: bytes, size: int) -> bool:
        return True

    @classmethod
    def _decoded(cls, frame: bytes) -> ModbusPDU | None:
        pdu = handle(cls.FRAMER, frame)
        return pdu if isinstance(pdu, cls.PDU) and pdu.dev_id in UNICAST else None

    def _build(self, pdu: ModbusPDU) -> bytes:
        return self.FRAMER.buildFrame(pdu)


@dataclass(frozen=True)
class ReadInputs(ModbusFrame, Request):
    """FC02 ``ADDR 02 START COUNT CRC``."""

    FUNCTION = READ_INPUTS
    FRAMER = REQUEST_FRAMER
    PDU = ReadDiscreteInputsRequest
    WHAT = "an input read (FC02)"
    RANGES = {"board": UNICAST, "start": WORD, "count": range(1, 2001)}
    board: int
    start: int = 0
    count: int = 8

    def pack(self) -> bytes:
        return self._build(
            ReadDiscreteInputsRequest(dev_id=self.board, address=self.start, count=self.count)
        )

    @classmethod
    def unpack(cls, frame: bytes) -> Self | None:
        pdu = cls._decoded(frame)
        if pdu is None:
            return None
        return cls(board=pdu.dev_id, start=pdu.address, count=pdu.count)

    def answered_by(self, reply: Frame) -> bool:
        if isinstance(reply, Inputs):
            return reply.board == self.board and len(reply.data) == -(-self.count // 8)
        return isinstance(reply, Refusal) and reply.answers(self)


@dataclass(frozen=True)
class WriteCoil(ModbusFrame, Request):
    """FC05 ``ADDR 05 COIL VALUE CRC``; the reply is the same frame, echoed."""

    FUNCTION = WRITE_COIL
    FRAMER = REQUEST_FRAMER
    PDU = FlashCoil
    WHAT = "a coil write (FC05)"
    RANGES = {"board": UNICAST, "coil": WORD, "value": WORD}
    board: int
    coil: int
    value: int

    def pack(self) -> bytes:
        return self._build(FlashCoil(address=self.coil, value=self.value, dev_id=self.board))

    @classmethod
    def unpack(cls, frame: bytes) -> Self | None:
        pdu = cls._decoded(frame)
        if pdu is None:
            return None
        return cls(board=pdu.dev_id, coil=pdu.address, value=pdu.value)

    def answered_by(self, reply: Frame) -> bool:
        if isinstance(reply, WriteCoil):
            return reply == self
        return isinstance(reply, Refusal) and reply.answers(self)


@dataclass(frozen=True)
class Inputs(ModbusFrame):
    """FC02 reply ``ADDR 02 N D1..Dn CRC``."""

    FUNCTION = READ_INPUTS
    FRAMER = REPLY_FRAMER
    PDU = ReadDiscreteInputsResponse
    RANGES = {"board": UNICAST}
    board: int
    data: bytes = b"\x00"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= len(self.data) <= MAX_INPUT_BYTES:
            raise ConfigError(f"a Modbus input reply carries 1..{MAX_INPUT_BYTES} data bytes")

    @classmethod
    def _size_ok(cls, buffer: bytes, size: int) -> bool:
        return 1 <= size - 5 <= MAX_INPUT_BYTES  # N, the byte count

    def pack(self) -> bytes:
        return self._build(
            ReadDiscreteInputsResponse(dev_id=self.board, bits=unpack_bitstring(self.data))
        )

    @classmethod
    def unpack(cls, frame: bytes) -> Self | None:
        pdu = cls._decoded(frame)
        if pdu is None:
            return None
        return cls(board=pdu.dev_id, data=pack_bitstring(pdu.bits))


@dataclass(frozen=True)
class Refusal(ModbusFrame):
    """Modbus exception reply ``ADDR 80|FC CODE CRC``."""

    FRAMER = REPLY_FRAMER
    PDU = ExceptionResponse
    RANGES = {"board": UNICAST, "function": range(0x81, 0x100), "code": range(0x100)}
    board: int
    function: int  # with the 0x80 bit set
    code: int

    @classmethod
    def _function_ok(cls, function: int) -> bool:
        return function in cls.RANGES["function"]

    def pack(self) -> bytes:
        return self._build(ExceptionResponse(self.function, self.code, device_id=self.board))

    @classmethod
    def unpack(cls, frame: bytes) -> Self | None:
        pdu = cls._decoded(frame)
        if pdu is None:
            return None
        return cls(board=pdu.dev_id, function=pdu.function_code, code=pdu.exception_code)

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
        steps = max(1, -(-pulse_ms // FLASH_STEP_MS))
        return WriteCoil(board, FLASH_BASE + wire_channel, steps)

    def query_one(self, board: int, wire_channel: int) -> Request:
        return ReadInputs(board, wire_channel, 1)

    def query_all(self, board: int, channels: int, reply_width: int | None = None) -> Request:
        return ReadInputs(board, 0, channels)

    def inputs(self, reply: Frame, config: BoardConfig) -> tuple[list[int], list[int] | None]:
        assert isinstance(reply, Inputs)
        return bits(reply.data), None

    def channel_inputs(
        self, request: Request, reply: Frame, config: BoardConfig, channel: int
    ) -> tuple[int, int | None] | None:
        assert isinstance(request, ReadInputs) and isinstance(reply, Inputs)
        index = config.wire_channel(channel) - request.start  # the reply starts at START
        levels = bits(reply.data, request.count)
        return (levels[index], None) if 0 <= index < len(levels) else None
