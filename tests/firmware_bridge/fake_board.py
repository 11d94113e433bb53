"""A scripted lock board on the far side of a real pty, for bus and transaction tests.

The bus opens the pty's slave by its path through pyserial, exactly as it would open
/dev/ttyUSB0; a thread on the master side decodes our requests with the same codec (its
REQUESTS kinds) and writes whatever the script says, after whatever delay it says. Fault
switches (silence, late replies, corrupt checksums, garbage) are plain attributes.
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from collections.abc import Callable, Iterable

from firmware_bridge.protocols import LockProtocol, Request
from firmware_bridge.protocols.base import pack_bits
from firmware_bridge.protocols.kerong import Cu16StatusReply, Cu16Unlock, Cu16UnlockAll

Answer = Callable[[Request], Iterable[tuple[float, bytes]]]  # (delay s, bytes) to write


class PtyPeer:
    def __init__(self, protocol: LockProtocol, answer: Answer) -> None:
        self.protocol = protocol
        self.answer = answer
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.url = os.ttyname(self._slave)
        self.requests: list[tuple[float, Request]] = []  # arrival time, request
        self.writes: list[tuple[float, bytes]] = []  # time just before writing, bytes
        self.noise = bytearray()  # bytes from the master that were not a request
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pty-peer {self.url}")
        self._thread.start()

    def _run(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            readable, _, _ = select.select([self._master], [], [], 0.02)
            if not readable:
                continue
            try:
                buffer += os.read(self._master, 4096)
            except OSError:
                return
            while buffer:
                used, request = self.protocol.decode(buffer, self.protocol.REQUESTS)
                if used == 0:
                    break
                if request is None:
                    self.noise += buffer[:used]
                buffer = buffer[used:]
                if request is not None:
                    self.requests.append((time.monotonic(), request))
                    for delay, data in self.answer(request):
                        if delay and self._stop.wait(delay):
                            return
                        self.writes.append((time.monotonic(), data))
                        os.write(self._master, data)

    def write(self, data: bytes) -> None:
        """Put unrequested bytes on the line (a forced door, noise...)."""
        os.write(self._master, data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self._master)
        os.close(self._slave)


class Cu16Board:
    """A kerong-cu16 board at ``address`` with 16 locks (locked_level 1) and IR sensors.

    An unlock releases the latch and the door springs open unless the channel is jammed.
    """

    def __init__(self, address: int = 1) -> None:
        self.address = address
        self.locked = [True] * 16
        self.occupied = [False] * 16
        self.jammed: set[int] = set()
        self.silent = False
        self.answers_unlock = True
        self.delay = 0.0  # before every reply
        self.late_once: float | None = None  # delay for the next reply only
        self.corrupt = False  # flip the checksum of every reply
        self.garbage = b""  # sent right before each reply
        self.unlocked: list[int] = []  # channels pulsed, in order

    def reply(self, addr_byte: int) -> bytes:
        frame = Cu16StatusReply(
            address=addr_byte,
            locks=pack_bits([int(x) for x in self.locked], 2),
            sensors=pack_bits([int(x) for x in self.occupied], 2),
        ).pack()
        if self.corrupt:
            frame = frame[:-1] + bytes([frame[-1] ^ 0xFF])
        return self.garbage + frame

    def __call__(self, request: Request) -> list[tuple[float, bytes]]:
        if request.board != self.address or self.silent:
            return []
        if isinstance(request, Cu16Unlock | Cu16UnlockAll):
            channels = [request.lock + 1] if isinstance(request, Cu16Unlock) else range(1, 17)
            for channel in channels:
                self.unlocked.append(channel)
                if channel not in self.jammed:
                    self.locked[channel - 1] = False
            if not self.answers_unlock:
                return []
        delay = self.delay
        if self.late_once is not None:
            delay, self.late_once = self.late_once, None
        return [(delay, self.reply(request.board << 4 | request.lock))]
