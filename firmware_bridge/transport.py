"""Moves bytes over any pyserial URL; knows nothing of frames.

``/dev/ttyUSB0``, ``socket://host:port``, ``rfc2217://host:port`` and ``loop://`` all open
through ``serial.serial_for_url``, so tests and the simulator exercise the same code as a
cabinet's USB adapter.

A link that fails (USB adapter unplugged, serial server restarted, socket dropped) raises
LinkError and is closed; the next request opens it again from its URL, so the cabinet comes
back by itself when the link does, instead of failing until someone restarts the controller.
"""

from __future__ import annotations

import contextlib
import logging
import time

import serial
from serial.rs485 import RS485Settings

from firmware_bridge.errors import LinkError

log = logging.getLogger(__name__)

# How long one read waits for a first byte. Reads return as soon as bytes arrive, so this
# only bounds how late a deadline is noticed; a fixed value also spares real ports a
# termios reconfiguration on every read.
POLL_S = 0.005
TAKE_MAX = 4096


def _connect(url: str, baud: int, rs485: bool) -> serial.SerialBase:
    try:
        port = serial.serial_for_url(url, baudrate=baud, timeout=POLL_S, write_timeout=2.0)
    except (serial.SerialException, OSError, ValueError) as err:
        raise LinkError(f"cannot open serial port {url}: {err}", unsent=True) from None
    if rs485:
        try:
            # Drive RTS high while sending so a half-duplex adapter switches direction.
            port.rs485_mode = RS485Settings(rts_level_for_tx=True, rts_level_for_rx=False)
        except (serial.SerialException, OSError, ValueError) as err:
            port.close()
            raise LinkError(
                f"serial port {url} does not support RS-485 direction control: {err}",
                unsent=True,
            ) from None
    return port


class SerialTransport:
    def __init__(
        self, port: serial.SerialBase, url: str, *, baud: int | None = None, rs485: bool = False
    ) -> None:
        self._port: serial.SerialBase | None = port
        self.url = url
        self._baud = int(port.baudrate) if baud is None else baud
        self._rs485 = rs485
        self._closed = False

    @classmethod
    def open(cls, url: str, baud: int, *, rs485: bool = False) -> SerialTransport:
        return cls(_connect(url, baud, rs485), url, baud=baud, rs485=rs485)

    @property
    def baud(self) -> int:
        return self._baud

    def _live(self) -> serial.SerialBase:
        """The open port; reopened from the URL if the link was lost."""
        if self._closed:
            raise LinkError(f"serial port {self.url} is closed", unsent=True)
        if self._port is None:
            self._port = _connect(self.url, self._baud, self._rs485)
            log.info("serial link %s is back", self.url)
        return self._port

    def _lost(self, what: str, err: Exception, *, unsent: bool = False) -> LinkError:
        """Close a failed link so the next request reopens it; the error to raise."""
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                port.close()
        log.warning("serial link %s lost: %s", self.url, err)
        return LinkError(f"{what} {self.url} failed: {err}", unsent=unsent)

    def write(self, data: bytes) -> float:
        """Send ``data``; returns time.monotonic() when it was handed to the port."""
        port = self._live()
        started = time.monotonic()
        try:
            port.write(data)
            port.flush()
        except (serial.SerialException, OSError) as err:
            raise self._lost("write to", err) from None
        return started

    def read(self, timeout: float) -> bytes:
        """Whatever arrives within ``timeout`` seconds; returns at the first bytes."""
        port = self._live()
        deadline = time.monotonic() + timeout
        try:
            while True:
                data = port.read(1)
                if data:
                    waiting = port.in_waiting
                    return data + port.read(waiting) if waiting else data
                if time.monotonic() >= deadline:
                    return b""
        except (serial.SerialException, OSError) as err:
            raise self._lost("read from", err) from None

    @property
    def in_waiting(self) -> int:
        """Bytes that have arrived and not been read yet (on ``socket://`` URLs pyserial only
        says 1 for "some")."""
        try:
            return self._live().in_waiting
        except (serial.SerialException, OSError) as err:
            raise self._lost("read from", err) from None

    def take_waiting(self) -> bytes:
        """Whatever has already arrived, without waiting for more (at most TAKE_MAX bytes:
        a babbling line must not hold the caller forever)."""
        port = self._live()
        taken = bytearray()
        try:
            # socket:// says only "1" while anything is there, so ask again until it is all.
            while len(taken) < TAKE_MAX and (waiting := port.in_waiting):
                taken += port.read(waiting)
        except (serial.SerialException, OSError) as err:
            raise self._lost("read from", err, unsent=True) from None
        return bytes(taken)

    def flush_input(self) -> None:
        port = self._live()
        try:
            port.reset_input_buffer()
        except (serial.SerialException, OSError) as err:
            raise self._lost("flushing", err, unsent=True) from None

    def close(self) -> None:
        self._closed = True
        port, self._port = self._port, None
        # Closing a port that vanished (USB unplugged) is not worth an error.
        if port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                port.close()

    @property
    def is_open(self) -> bool:
        return self._port is not None and bool(self._port.is_open)
