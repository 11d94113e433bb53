"""Checksums used by the lock-board protocols; shared by the codecs and the simulator."""

from pymodbus.framer import FramerRTU


def sum8(data: bytes) -> int:
    """Kerong CU boards: sum of all preceding bytes, low 8 bits."""
    return sum(data) & 0xFF


def xor8(data: bytes) -> int:
    """Generic 8A/80 boards: XOR (block check character) of all preceding bytes."""
    result = 0
    for byte in data:
        result ^= byte
    return result


def crc16_modbus(data: bytes) -> bytes:
    """CRC-16/Modbus as it goes on the wire (low byte first), computed by pymodbus."""
    return FramerRTU.compute_CRC(data).to_bytes(2, "big")
