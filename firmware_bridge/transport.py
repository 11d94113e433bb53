"""Moves bytes over any pyserial URL; knows nothing of frames.

``/dev/ttyUSB0``, ``socket://host:port``, ``rfc2217://host:port`` and ``loop://`` all open
through ``serial.serial_for_url``, so tests and the simulator exercise the same code as a
cabinet's USB adapter.
"""

from __future__ import annotations

import contextlib
import time

import serial
from serial.rs485 import RS485Settings

from firmware_bridge.errors import LinkError

# How long one read waits for a first byte. Reads return as soon as bytes arrive, so this
# only bounds how late a deadline is noticed; a fixed value also spares real ports a
# termios reconfiguration on every read.
POLL_S = 0.005


class SerialTransport:
    def __init__(self, port: serial.SerialBase, url: str) -> None:
        self._port = port
        self.url = url

    @classmethod
    def open(cls, url: str, baud: int, *, rs485: bool = False) -> SerialTransport:
        try:
            port = serial.serial_for_url(url, baudrate=baud, timeout=POLL_S, write_timeout=2.0)
        except (serial.SerialException, OSError, ValueError) as err:
            raise LinkError(f"cannot open serial port {url}: {err}") from None
        if rs485:
            try:
                # Drive RTS high while sending so a half-duplex adapter switches direction.
                port.rs485_mode = RS485Settings(rts_level_for_tx=True, rts_level_for_rx=False)
            except (serial.SerialException, OSError, ValueError) as err:
                port.close()
                raise LinkError(
                    f"serial port {url} does not support RS-485 direction control: {err}"
                ) from None
        return cls(port, url)

    @property
    def baud(self) -> int:
        return int(self._port.baudrate)

    def write(self, data: bytes) -> float:
        """Send ``data``; returns time.monotonic() when it was handed to the port."""
        started = time.monotonic()
        try:
            self._port.write(data)
            self._port.flush()
        except (serial.SerialException, OSError) as err:
            raise LinkError(f"write to {self.url} failed: {err}") from None
        return started

    def read(self, timeout: float) -> bytes:
        """Whatever arrives within ``timeout`` seconds; returns at the first bytes."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                data = self._port.read(1)
                if data:
                    waiting = self._port.in_waiting
                    return data + self._port.read(waiting) if waiting else data
                if time.monotonic() >= deadline:
                    return b""
        except (serial.SerialException, OSError) as err:
            raise LinkError(f"read from {self.url} failed: {err}") from None

    def flush_input(self) -> None:
        try:
            self._port.reset_input_buffer()
        except (serial.SerialException, OSError) as err:
            raise LinkError(f"{self.url}: {err}") from None

    def close(self) -> None:
        # Closing a port that vanished (USB unplugged) is not worth an error.
        with contextlib.suppress(serial.SerialException, OSError):
            self._port.close()

    @property
    def is_open(self) -> bool:
        return bool(self._port.is_open)
