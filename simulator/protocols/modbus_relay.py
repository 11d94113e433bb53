"""Waveshare-style Modbus RTU relay boards used as lock drivers, board side (DESIGN.md §4).

FC05 at coil 0x0200+ch0 with value N is "flash on": the relay closes for N x 100 ms, which is
the lock pulse; the reply echoes the request. FC05 at coil ch0 with FF00/0000 switches a relay
on/off (the latch stays released while it is on); coil 0x00FF switches all. FC01 reads the
relays, FC02 the door inputs: bit (i % 8) of data byte i // 8 is input i+1, and an input reads
``locked_level`` while its door is latched shut. Anything else gets a Modbus exception reply.
The CRC is pymodbus' (via firmware_bridge.checksums).
"""

from __future__ import annotations

import struct

from firmware_bridge.checksums import crc16_modbus
from simulator.board import BoardView
from simulator.protocols.base import BoardProtocol, Request, pack_bits

FLASH_BASE = 0x0200
ALL_RELAYS = 0x00FF
COIL_ON, COIL_OFF = 0xFF00, 0x0000
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE = 0x01, 0x02, 0x03

# function code -> (name, fixed frame length or None when a byte count follows)
FUNCTIONS: dict[int, tuple[str, int | None]] = {
    0x01: ("read_coils", 8),
    0x02: ("read_inputs", 8),
    0x03: ("read_holding", 8),
    0x04: ("read_input_registers", 8),
    0x05: ("write_coil", 8),
    0x06: ("write_register", 8),
    0x0F: ("write_coils", None),
    0x10: ("write_registers", None),
}


class ModbusRelay(BoardProtocol):
    name = "modbus-relay"
    checksum_len = 2

    def seal(self, body: bytes) -> bytes:
        return body + crc16_modbus(body)

    def corrupt(self, frame: bytes) -> bytes:
        return frame[:-2] + bytes([frame[-2], frame[-1] ^ 0xFF])

    def parse(self, buffer: bytes) -> tuple[int, Request | None]:
        if len(buffer) < 2:
            return 0, None
        function = FUNCTIONS.get(buffer[1])
        if function is None or buffer[0] == 0 or buffer[0] > 247:
            return 1, None
        name, length = function
        if length is None:
            if len(buffer) < 7:
                return 0, None
            length = 9 + buffer[6]
        if len(buffer) < length:
            return 0, None
        frame = bytes(buffer[:length])
        if not self.sealed_ok(frame):
            return 1, None
        start, value = struct.unpack(">HH", frame[2:6])
        return length, Request(raw=frame, address=frame[0], command=name, start=start, value=value)

    def _exception(self, request: Request, code: int) -> bytes:
        return self.seal(bytes([request.address, request.raw[1] | 0x80, code]))

    def respond(self, request: Request, board: BoardView) -> bytes | None:
        handler = {
            "read_coils": self._read_coils,
            "read_inputs": self._read_inputs,
            "write_coil": self._write_coil,
        }.get(request.command)
        if handler is None:
            return self._exception(request, ILLEGAL_FUNCTION)
        return handler(request, board)

    def _read_bits(self, request: Request, bits: list[int]) -> bytes:
        start, count = request.start, request.value
        if not 1 <= count <= 2000:
            return self._exception(request, ILLEGAL_VALUE)
        if start + count > len(bits):
            return self._exception(request, ILLEGAL_ADDRESS)
        data = pack_bits(bits[start : start + count], -(-count // 8))
        return self.seal(bytes([request.address, request.raw[1], len(data), *data]))

    def _read_coils(self, request: Request, board: BoardView) -> bytes:
        return self._read_bits(request, board.relays())

    def _read_inputs(self, request: Request, board: BoardView) -> bytes:
        return self._read_bits(request, board.levels())

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
