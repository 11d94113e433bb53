"""``CuttableLink``: a TCP proxy standing for one network path (a locker's uplink).

Point a client at ``link.port`` instead of the server's port; ``cut()`` drops every open
connection and refuses new ones, as when the locker's network goes down, while the server
and its other clients (the cloud) carry on; ``restore()`` lets connections through again.
One thread forwards bytes both ways with a selector; ``close()`` stops it.
"""

import contextlib
import selectors
import socket
import threading

from tests.support.waiting import free_port

_CHUNK = 65536


class CuttableLink:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self._upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._peer: dict[socket.socket, socket.socket] = {}
        self._lock = threading.Lock()
        self._cut = False
        self._stopping = threading.Event()
        self.connections = 0  # accepted and forwarded, for tests to see a reconnect
        self._thread = threading.Thread(target=self._run, name="cuttable-link", daemon=True)
        self._thread.start()

    @property
    def is_cut(self) -> bool:
        return self._cut

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            for sock in list(self._peer):
                self._drop(sock)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(10)
        with self._lock:
            for sock in list(self._peer):
                self._drop(sock)
        self._selector.close()
        self._listener.close()

    # --- the forwarding thread ------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                with self._lock:
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj in self._peer:
                        self._forward(key.fileobj)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        if self._cut:
            client.close()  # no route: the connection dies at once
            return
        try:
            server = socket.create_connection(self._upstream, timeout=2)
        except OSError:
            client.close()
            return
        for sock in (client, server):
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ)
        self._peer[client], self._peer[server] = server, client
        self.connections += 1

    def _forward(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            return
        other = self._peer[sock]
        try:
            # Blocking for the send only: a partial write must not lose bytes of a packet.
            other.settimeout(5)
            other.sendall(data)
            other.setblocking(False)
        except OSError:
            self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        other = self._peer.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            self._peer.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(s)
            s.close()


class RetainClearingLink(CuttableLink):
    """A path to an MQTT broker that clears the retain flag of every PUBLISH the broker sends
    to the client, as some brokers and bridges do: a retained message then looks like a live
    one. ``cleared``: how many flags it cleared. The client -> broker direction is untouched.
    """

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.cleared = 0
        self._from_server: dict[socket.socket, bytearray] = {}
        super().__init__(upstream_port, upstream_host)

    def _accept(self) -> None:
        before = set(self._peer)
        super()._accept()
        for sock in set(self._peer) - before:
            if sock.getpeername() == self._upstream:
                self._from_server[sock] = bytearray()

    def _forward(self, sock: socket.socket) -> None:
        pending = self._from_server.get(sock)
        if pending is None:
            super()._forward(sock)
            return
        try:
            data = sock.recv(_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._from_server.pop(sock, None)
            self._drop(sock)
            return
        pending += data
        out = bytearray()
        while True:
            size = _packet_size(pending)
            if size is None:
                break
            packet = pending[:size]
            del pending[:size]
            if packet[0] >> 4 == 3 and packet[0] & 1:  # PUBLISH, retained
                packet[0] &= 0xFE
                self.cleared += 1
            out += packet
        if out:
            other = self._peer[sock]
            try:
                other.settimeout(5)
                other.sendall(out)
                other.setblocking(False)
            except OSError:
                self._drop(sock)


def _packet_size(buffer: bytearray) -> int | None:
    """Length of the first whole MQTT packet in ``buffer`` (fixed header included), or None
    if it is not all there yet."""
    length, shift = 0, 0
    for i in range(1, 5):
        if i >= len(buffer):
            return None
        byte = buffer[i]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            total = 1 + i + length
            return total if len(buffer) >= total else None
        shift += 7
    raise ValueError("malformed MQTT remaining length")
