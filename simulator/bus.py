"""The virtual RS-485 line: which boards hear a request and what comes back on the wire.

Every board on a real bus hears every frame; only the one whose DIP address matches answers,
except for a family's broadcast address (cu48 0A), which every board acts on and answers in
turn, in address order. Board faults shape the reply here, in one place: an absent board is
silent, a garbage fault puts noise before the reply, a bad checksum spoils it, a slow board
answers late, and two boards on one address talk at once so their bytes collide.

Boards that push door changes (8A ``reports_doors``) do it here too: the bus follows the
ground truth, and a door of such a board that opens or shuts becomes a report frame handed
to whoever listens on the line (the endpoints).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from simulator.board import PhantomBoard, VirtualBoard
from simulator.protocols import BoardProtocol, Request
from simulator.truth import GroundTruth, TruthEvent

Pusher = Callable[[bytes, int, int | None], None]  # report bytes, board, channel


@dataclass(frozen=True)
class Reply:
    data: bytes
    delay: float  # extra seconds before the reply starts (slow fault)
    boards: tuple[int, ...]
    garbled: bool = False
    # (bytes, seconds): the reply pauses this long after this many bytes (split_reply fault)
    pause: tuple[int, float] | None = None


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
        truth: GroundTruth | None = None,
    ) -> None:
        self.name = name
        self.protocol = protocol
        self.boards = {b.address: b for b in boards}
        self.lock = lock
        self.baud = baud
        self.wire_timing = wire_timing
        self.reply_delay = reply_delay
        self._pushers: list[Pusher] = []
        self._truth = truth
        if truth is not None and any(b.spec.reports_doors for b in boards):
            truth.subscribe(self._on_truth)

    def close(self) -> None:
        if self._truth is not None:
            self._truth.unsubscribe(self._on_truth)

    def dispatch(self, request: Request) -> list[Reply]:
        """Let the addressed board(s) act on ``request``; the replies that go on the wire."""
        if request.address == self.protocol.broadcast:
            targets = [self.boards[a] for a in sorted(self.boards)]
        else:
            board = self.boards.get(request.address)
            targets = [] if board is None else [board]
        with self.lock:
            replies = [self._reply(board, request) for board in targets]
        return [reply for reply in replies if reply is not None]

    def _reply(self, board: VirtualBoard, request: Request) -> Reply | None:
        if board.fault("absent"):
            return None
        frame = self.protocol.respond(request, board)
        if frame is None:
            return None
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
        split = board.fault("split_reply")
        pause = (split.params["after"], split.params["seconds"]) if split else None
        return Reply(data=frame, delay=delay, boards=(board.address,), garbled=garbled, pause=pause)

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

    # -- door reports ------------------------------------------------------------------------

    def add_pusher(self, pusher: Pusher) -> None:
        with self.lock:
            self._pushers.append(pusher)

    def remove_pusher(self, pusher: Pusher) -> None:
        with self.lock:
            if pusher in self._pushers:
                self._pushers.remove(pusher)

    def _on_truth(self, event: TruthEvent) -> None:
        if event.kind not in ("door_opened", "door_closed") or event.bus != self.name:
            return
        board = self.boards.get(event.board)
        if board is None or not board.spec.reports_doors or board.fault("absent"):
            return
        with self.lock:
            frame = self.protocol.report(board, event.channel)
            pushers = list(self._pushers)
        if frame is not None:
            for push in pushers:
                push(frame, board.address, event.channel)
