"""Fixtures for simulator tests: simulators and serial ports that are always closed."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import serial

from simulator import BoardSpec, Simulator


@pytest.fixture
def make_sim() -> Iterator[Callable[..., Simulator]]:
    sims: list[Simulator] = []

    def make(*boards: BoardSpec, **options: object) -> Simulator:
        options.setdefault("wire_timing", False)
        options.setdefault("reply_delay", 0.0)
        sim = Simulator(list(boards), **options)
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        sim.stop()


@pytest.fixture
def open_port() -> Iterator[Callable[[str], serial.SerialBase]]:
    ports: list[serial.SerialBase] = []

    def open_(url: str, timeout: float = 1.0, baud: int = 9600) -> serial.SerialBase:
        port = serial.serial_for_url(url, timeout=timeout, baudrate=baud)
        ports.append(port)
        return port

    yield open_
    for port in ports:
        port.close()


@pytest.fixture(params=["tcp", "pty"])
def connect(request, open_port) -> Callable[[Simulator], serial.SerialBase]:
    """Open a master port on the simulator, once over TCP and once over a real pty."""

    def connect_(sim: Simulator, timeout: float = 1.0) -> serial.SerialBase:
        url = sim.start_tcp("127.0.0.1", 0) if request.param == "tcp" else sim.start_pty()
        # At the bus's speed: a pty master at another speed is not heard (see endpoints).
        return open_port(url, timeout, sim.baud)

    return connect_


def transact(port: serial.SerialBase, request: bytes, reply_len: int) -> bytes:
    port.write(request)
    port.flush()
    return port.read(reply_len)
