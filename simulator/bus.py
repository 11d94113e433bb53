"""The virtual RS-485 line: which boards hear a request and what comes back on the wire.

Every board on a real bus hears every frame; only the one whose DIP address matches answers.
Board faults shape the reply here, in one place: an absent board is silent, a garbage fault
puts noise before the reply, a bad checksum spoils it, a slow board answers late, and two
boards on one address talk at once so their bytes collide.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from simulator.board import PhantomBoard, VirtualBoard
from simulator.protocols import BoardProtocol, Request


@dataclass(frozen=True)
class Reply:
    data: bytes
    delay: float  # extra seconds before the reply starts (slow fault)
    boards: tuple[int, ...]
    garbled: bool = False


class VirtualBus:
    def __init__(
        self,
        *,
        name: str,
        protocol: BoardProtocol,
        boards: list[VirtualBoard],
        lock: threading.RLock,
        baud: int,
        wire_timing: bool,
        reply_delay: float,
    ) -> None:
        self.name = name
        self.protocol = protocol
        self.boards = {b.address: b for b in boards}
        self.lock = lock
        self.baud = baud
        self.wire_timing = wire_timing
        self.reply_delay = reply_delay

    def dispatch(self, request: Request) -> list[Reply]:
        """Let the addressed board act on ``request``; the replies that go on the wire."""
        board = self.boards.get(request.address)
        if board is None:
            return []
        with self.lock:
            if board.fault("absent"):
                return []
            frame = self.protocol.respond(request, board)
            if frame is None:
                return []
            garbled = False
            if board.fault("duplicate_address"):
                twin = self.protocol.respond(request, PhantomBoard(board.spec))
                if twin is not None:
                    frame = self.collide(frame, twin)
                    garbled = True
            if board.fault("bad_checksum"):
                frame = self.protocol.corrupt(frame)
            noise = board.fault("garbage")
            if noise:
                frame = noise.params["bytes"] + frame
            slow = board.fault("slow")
            delay = slow.params["seconds"] if slow else 0.0
        return [Reply(data=frame, delay=delay, boards=(board.address,), garbled=garbled)]

    def collide(self, a: bytes, b: bytes) -> bytes:
        """Two drivers on one pair: a dominant 0 wins each bit (idle line reads 1).

        If the two frames happen to be identical the merge would still be valid, but two
        transmitters never start on the same bit edge, so the receiver never gets a clean
        frame: the checksum is spoilt whenever the merge would pass.
        """
        length = max(len(a), len(b))
        a, b = a.ljust(length, b"\xff"), b.ljust(length, b"\xff")
        merged = bytes(x & y for x, y in zip(a, b, strict=True))
        if self.protocol.sealed_ok(merged):
            merged = self.protocol.corrupt(merged)
        return merged
