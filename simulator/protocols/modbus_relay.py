"""Waveshare-style Modbus RTU relay boards used as lock drivers, board side (DESIGN.md §4;
flash and relay coils from https://www.waveshare.com/wiki/Modbus_RTU_Relay, the FC02 door
inputs from the input-carrying "Modbus RTU Relay (D)" board,
https://www.waveshare.com/wiki/Modbus_RTU_Relay_(D)).

FC05 at coil 0x0200+ch0 with value N is "flash on": the relay closes for N x 100 ms, which is
the lock pulse; the reply echoes the request. FC05 at coil ch0 with FF00/0000 switches a relay
on/off (the latch stays released while it is on); coil 0x00FF switches all. FC01 reads the
relays, FC02 the door inputs: bit (i % 8) of data byte i // 8 is input i+1, and an input reads
``locked_level`` while its door is latched shut. Anything else gets a Modbus exception reply.

Framing is pymodbus', through the same framers the master uses
(firmware_bridge.protocols.modbus_relay): a request's length comes from pymodbus' server-side
PDU table, its CRC and fields are checked by ``FramerRTU.handleFrame``, and replies are
pymodbus PDUs put on the wire by ``FramerRTU.buildFrame``. The resync loop is ours, for the
reason given there (handleFrame drops a whole buffer after a bad CRC).
"""

from __future__ import annotations

from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse

from firmware_bridge.checksums import crc16_modbus
from firmware_bridge.protocols.modbus_relay import (
    REQUEST_FRAMER,
    UNICAST,
    crc_ok,
    frame_size,
    handle,
)
from simulator.board import BoardView
from simulator.protocols.base import BoardProtocol, Request

FLASH_BASE = 0x0200
ALL_RELAYS = 0x00FF
COIL_ON, COIL_OFF = 0xFF00, 0x0000
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE = 0x01, 0x02, 0x03

# The functions a relay board takes a frame of: the three it serves, and the common ones it
# answers with "illegal function" (so a master probing registers gets an answer, not silence).
FUNCTIONS: dict[int, str] = {
    0x01: "read_coils",
    0x02: "read_inputs",
    0x03: "read_holding",
    0x04: "read_input_registers",
    0x05: "write_coil",
    0x06: "write_register",
    0x0F: "write_coils",
    0x10: "write_registers",
}


class ModbusRelay(BoardProtocol):
    name = "modbus-relay"
    checksum_len = 2

    def frame_end_silence(self, baud: int) -> float:
        # An RTU slave knows a request has ended only after 3.5 character times of silence
        # (11-bit characters; a fixed 1.75 ms above 19200 baud), so it cannot answer sooner.
        return 3.5 * 11 / baud if baud <= 19200 else 0.00175

    def seal(self, body: bytes) -> bytes:
        return body + crc16_modbus(body)

    def corrupt(self, frame: bytes) -> bytes:
        return frame[:-2] + bytes([frame[-2], frame[-1] ^ 0xFF])

    def parse(self, buffer: bytes) -> tuple[int, Request | None]:
        if len(buffer) < 2:
            return 0, None
        name = FUNCTIONS.get(buffer[1])
        if name is None or buffer[0] not in UNICAST:
            return 1, None
        length = frame_size(REQUEST_FRAMER, buffer)
        if length is None:
            return 1, None
        if length == 0 or len(buffer) < length:
            return 0, None
        frame = bytes(buffer[:length])
        if not crc_ok(frame):
            return 1, None
        pdu = handle(REQUEST_FRAMER, frame)
        if pdu is None:
            # The CRC holds but pymodbus refuses a field (an FC01/02 count of 0 or over 2000):
            # a real board answers "illegal data value" to such a frame.
            return length, Request(raw=frame, address=frame[0], command=f"{name}:invalid")
        return length, Request(
            raw=frame,
            address=pdu.dev_id,
            command=name,
            start=pdu.address,
            value=getattr(pdu, "value", pdu.count),  # FC05: the coil value; reads: the count
        )

    def _build(self, pdu: ModbusPDU) -> bytes:
        return REQUEST_FRAMER.buildFrame(pdu)

    def _exception(self, request: Request, code: int) -> bytes:
        return self._build(ExceptionResponse(request.raw[1], code, device_id=request.address))

    def respond(self, request: Request, board: BoardView) -> bytes | None:
        handler = {
            "read_coils": self._read_coils,
            "read_inputs": self._read_inputs,
            "write_coil": self._write_coil,
        }.get(request.command)
        if handler is not None:
            return handler(request, board)
        if request.command in ("read_coils:invalid", "read_inputs:invalid"):
            return self._exception(request, ILLEGAL_VALUE)
        return self._exception(request, ILLEGAL_FUNCTION)

    def _read_bits(
        self, request: Request, bits: list[int], reply: type[ReadCoilsResponse]
    ) -> bytes:
        start, count = request.start, request.value
        if start + count > len(bits):
            return self._exception(request, ILLEGAL_ADDRESS)
        values = [bool(b) for b in bits[start : start + count]]
        return self._build(reply(dev_id=request.address, bits=values))

    def _read_coils(self, request: Request, board: BoardView) -> bytes:
        return self._read_bits(request, board.relays(), ReadCoilsResponse)

    def _read_inputs(self, request: Request, board: BoardView) -> bytes:
        return self._read_bits(request, board.levels(), ReadDiscreteInputsResponse)

    def _write_coil(self, request: Request, board: BoardView) -> bytes:
        coil, value = request.start, request.value
        channels = board.spec.channels
        if FLASH_BASE <= coil < FLASH_BASE + channels:
            pulse = value / 10 if value else board.spec.pulse_ms / 1000
            board.unlock(coil - FLASH_BASE + 1, pulse)
        elif value not in (COIL_ON, COIL_OFF):
            return self._exception(request, ILLEGAL_VALUE)
        elif coil < channels:
            board.set_relay(coil + 1, value == COIL_ON)
        elif coil == ALL_RELAYS:
            for channel in range(1, channels + 1):
                board.set_relay(channel, value == COIL_ON)
        else:
            return self._exception(request, ILLEGAL_ADDRESS)
        return request.raw  # a write is acknowledged by echoing it
