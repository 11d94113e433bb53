"""SerialTransport over pyserial URLs: bytes only, and link failures as LinkError."""

from __future__ import annotations

import socket
import threading

import pytest

from firmware_bridge import LockBus
from firmware_bridge.errors import LinkError
from firmware_bridge.protocols.kerong import Cu16StatusReply
from firmware_bridge.transport import SerialTransport
from tests.support.waiting import free_port, wait_until


def test_loop_moves_bytes_and_flushes_input():
    transport = SerialTransport.open("loop://", 9600)
    try:
        transport.write(b"\x01\x02\x03")
        assert transport.read(0.5) == b"\x01\x02\x03"
        transport.write(b"stale")
        transport.flush_input()
        assert transport.read(0.02) == b""
    finally:
        transport.close()


def test_refused_socket_is_a_link_error_naming_the_url():
    url = f"socket://127.0.0.1:{free_port()}"
    with pytest.raises(LinkError, match=url.replace(".", r"\.")):
        SerialTransport.open(url, 9600)


def test_rs485_direction_control_on_a_port_without_it(make_peer):
    # A pty has no RS-485 ioctl: asking for direction control fails clearly, not later.
    peer = make_peer("kerong-cu16", lambda r: [])
    with pytest.raises(LinkError, match="RS-485"):
        SerialTransport.open(peer.url, 19200, rs485=True)


def test_bus_over_a_tcp_socket():
    # socket:// (a serial server or the simulator's TCP endpoint) behaves like a port.
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve_one_status():
        conn, _ = server.accept()
        with conn:
            request = conn.recv(16)
            assert request == bytes.fromhex("02 10 30 03 45")
            conn.sendall(Cu16StatusReply(address=0x10, locks=b"\xfe\xff").pack())
            conn.recv(16)  # wait for the bus to hang up

    thread = threading.Thread(target=serve_one_status)
    thread.start()
    try:
        with LockBus.open(f"socket://127.0.0.1:{port}", "kerong-cu16", timeout=1.0) as bus:
            status = bus.status(1)
    finally:
        thread.join(5)
        server.close()
    assert [c.locked for c in status.channels[:3]] == [False, True, True]


def test_take_waiting_takes_all_that_arrived_over_a_socket():
    # pyserial's socket:// says in_waiting == 1 whatever has arrived: stale bytes before a
    # request must still go all at once, or the rest would be read as the reply.
    server = socket.create_server(("127.0.0.1", 0))
    transport = SerialTransport.open(f"socket://127.0.0.1:{server.getsockname()[1]}", 9600)
    conn, _ = server.accept()
    try:
        stale = Cu16StatusReply(address=0x10).pack() * 3
        conn.sendall(stale)  # one small write: one loopback segment
        wait_until(lambda: transport.in_waiting, 5, "the stale bytes")
        assert transport.take_waiting() == stale
        assert transport.take_waiting() == b""
    finally:
        conn.close()
        transport.close()
        server.close()
