"""Where a master plugs into the virtual bus: a TCP socket or a pseudo-terminal.

Each endpoint owns one thread that sleeps in ``select`` until bytes arrive, a scheduled reply
falls due, or ``stop`` wakes it through a pipe: no busy polling, and stopping is immediate.

- TCP: one master at a time (it is one RS-485 line). A new connection takes the line over
  from the old one, so a master restarted after ``kill -9`` is served at once even if the
  old socket's close has not been seen yet. pyserial opens it as ``socket://HOST:PORT``.
- pty: ``os.openpty`` in raw mode; pyserial opens the slave path (``/dev/pts/N``) directly.
  The simulator keeps its own slave descriptor open, so a master closing and reopening the
  port does not hang the line up (the master side would otherwise read EIO forever).
  The line speed the master set (pyserial sets it through termios, a pty keeps it) must be
  the bus's: bytes sent at another speed reach the boards as framing errors, so they are
  dropped as noise and nobody answers, which is what a wrong ``--baud`` does on a cabinet.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import selectors
import socket
import termios
import threading
import time
import tty
from collections import deque

from simulator.bus import VirtualBus
from simulator.errors import EndpointError
from simulator.link import LinkSession
from simulator.truth import GroundTruth

IDLE_WAIT = 1.0  # seconds select may sleep with nothing scheduled (stop wakes it anyway)
READ_SIZE = 4096
# termios speed constant -> baud rate, for the speeds a lock-board bus can run at.
_SPEEDS = {
    getattr(termios, f"B{rate}"): rate
    for rate in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)
    if hasattr(termios, f"B{rate}")
}


class Endpoint:
    kind = "endpoint"

    def __init__(self, bus: VirtualBus, truth: GroundTruth) -> None:
        self._bus = bus
        self._truth = truth
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop_lock = threading.Lock()
        self.session: LinkSession | None = None
        # Door reports a board pushed from another thread, for this endpoint's thread.
        self._reports: deque[tuple[bytes, int, int | None]] = deque()
        bus.add_pusher(self._push)

    def _push(self, data: bytes, board: int, channel: int | None) -> None:
        # Under the stop lock: once stop() has begun, the wake pipe may be closed and its
        # descriptor number reused by someone else's file.
        with self._stop_lock:
            if self._stopping.is_set():
                return
            self._reports.append((data, board, channel))
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"r")

    @property
    def url(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"sim-{self.kind}-{self._bus.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        with self._stop_lock:
            if self._stopping.is_set():
                return
            self._stopping.set()
        self._bus.remove_pusher(self._push)
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._close_resources()
        self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _run(self) -> None:
        while not self._stopping.is_set():
            due = self.session.next_due() if self.session else None
            timeout = IDLE_WAIT if due is None else max(0.0, due - time.monotonic())
            # epoll counts whole milliseconds and rounds up, which would add up to 1 ms to
            # every reply and spoil latency figures near the wire floor. Wait the whole
            # milliseconds in epoll, then sleep the sub-millisecond rest precisely.
            events = self._selector.select(math.floor(timeout * 1000) / 1000)
            for key, _ in events:
                if key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 64)
                else:
                    self._on_readable(key)
            if not events and due is not None:
                rest = due - time.monotonic()
                if 0 < rest < 0.002:
                    time.sleep(rest)
            while self._reports:
                data, board, channel = self._reports.popleft()
                if self.session is not None:  # no master connected: nobody hears it
                    self.session.push(data, board, channel, time.monotonic())
            if self.session is not None:
                self.session.run_due(time.monotonic())

    def _on_readable(self, key: selectors.SelectorKey) -> None:
        raise NotImplementedError

    def _close_resources(self) -> None:
        raise NotImplementedError


class PtyEndpoint(Endpoint):
    kind = "pty"

    def __init__(self, bus: VirtualBus, truth: GroundTruth) -> None:
        super().__init__(bus, truth)
        try:
            self._master, self._slave = os.openpty()
        except OSError as err:
            raise EndpointError(f"cannot open a pseudo-terminal: {err}") from err
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self._selector.register(self._master, selectors.EVENT_READ, "master")
        self.session = LinkSession(bus, truth, self._write, link=f"pty:{self.path}")

    @property
    def url(self) -> str:
        return self.path

    def _on_readable(self, key: selectors.SelectorKey) -> None:
        try:
            data = os.read(self._master, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as err:
            if err.errno != errno.EIO:
                raise
            # No slave open at this instant (cannot happen while we hold ours): wait a bit.
            self._stopping.wait(0.05)
            return
        speed = self._master_speed()
        if speed is not None and speed != self._bus.baud:
            self._truth.record(
                "noise_dropped",
                bus=self._bus.name,
                link=f"pty:{self.path}",
                hex=data.hex(" "),
                baud=speed,
            )
            return
        self.session.receive(data, time.monotonic())

    def _master_speed(self) -> int | None:
        """The baud rate the master set on the pty; None if unknown (then it is accepted)."""
        try:
            return _SPEEDS.get(termios.tcgetattr(self._master)[5])
        except termios.error:
            return None

    def _write(self, data: bytes) -> int:
        try:
            return os.write(self._master, data)
        except BlockingIOError:
            return 0  # nobody reads the port and its buffer is full: the bytes are lost

    def _close_resources(self) -> None:
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class TcpEndpoint(Endpoint):
    kind = "tcp"

    def __init__(self, bus: VirtualBus, truth: GroundTruth, host: str, port: int) -> None:
        super().__init__(bus, truth)
        self._listener = bind_listener(host, port)
        self.host, self.port = self._listener.getsockname()[:2]
        self._selector.register(self._listener, selectors.EVENT_READ, "listen")
        self._client: socket.socket | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"socket://{host}:{self.port}"

    def _on_readable(self, key: selectors.SelectorKey) -> None:
        if key.data == "listen":
            self._accept()
            return
        try:
            data = self._client.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop_client("closed")
            return
        self.session.receive(data, time.monotonic())

    def _accept(self) -> None:
        try:
            client, peer = self._listener.accept()
        except OSError:
            return
        if self._client is not None:
            self._drop_client("replaced")
        client.setblocking(False)
        # Replies are tiny and latency-critical: do not let Nagle hold them back.
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client = client
        self._selector.register(client, selectors.EVENT_READ, "client")
        link = f"tcp:{peer[0]}:{peer[1]}"
        self.session = LinkSession(self._bus, self._truth, self._write, link=link)
        self._truth.record("master_connected", bus=self._bus.name, link=link)

    def _drop_client(self, reason: str) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        self._selector.unregister(client)
        client.close()
        self.session = None
        self._truth.record("master_disconnected", bus=self._bus.name, reason=reason)

    def _write(self, data: bytes) -> int:
        if self._client is None:
            return 0
        try:
            return self._client.send(data)
        except BlockingIOError:
            return 0
        except OSError:
            return 0  # peer vanished; the next read sees it and drops the link

    def _close_resources(self) -> None:
        if self._client is not None:
            self._drop_client("stopped")
        self._listener.close()


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket, or an EndpointError that says what went wrong."""
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise EndpointError(f"TCP port must be 0..65535, not {port!r}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise EndpointError(f"cannot resolve host {host!r}: {err}") from err
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(4)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise EndpointError(f"{host}:{port} is already in use") from err
        raise EndpointError(f"cannot listen on {host}:{port}: {err.strerror or err}") from err
    sock.setblocking(False)
    return sock
