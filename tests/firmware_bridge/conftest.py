"""Fixtures for firmware_bridge tests: pty peers and buses that are always closed."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from firmware_bridge import LockBus
from firmware_bridge.protocols import LockProtocol, get_protocol
from tests.firmware_bridge.fake_board import Answer, Cu16Board, PtyPeer


@pytest.fixture
def make_peer() -> Iterator[Callable[[LockProtocol | str, Answer], PtyPeer]]:
    peers: list[PtyPeer] = []

    def make(protocol: LockProtocol | str, answer: Answer) -> PtyPeer:
        codec = get_protocol(protocol) if isinstance(protocol, str) else protocol
        peer = PtyPeer(codec, answer)
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.close()


@pytest.fixture
def make_bus() -> Iterator[Callable[..., LockBus]]:
    buses: list[LockBus] = []

    def make(url: str, protocol: str, **options: object) -> LockBus:
        options.setdefault("timeout", 0.15)
        bus = LockBus.open(url, protocol, **options)
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        bus.close()


@pytest.fixture
def cu16(make_peer, make_bus) -> tuple[Cu16Board, PtyPeer, LockBus]:
    """A cu16 board at address 1 behind a pty, and a bus on it with short timeouts."""
    board = Cu16Board(1)
    peer = make_peer("kerong-cu16", board)
    bus = make_bus(peer.url, "kerong-cu16", retries=1)
    return board, peer, bus
