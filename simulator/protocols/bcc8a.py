"""Generic RS-485 "8A" lock boards, board side (DESIGN.md §4).

unlock     ``8A BOARD CH 11 BCC`` -> ``8A BOARD CH ST BCC``
open all   ``8A BOARD 00 11 BCC``, no reply (none is documented)
query one  ``80 BOARD CH 33 BCC`` -> ``80 BOARD CH ST BCC``
query all  ``80 BOARD 00 33 BCC`` -> ``80 BOARD Sn..S1 33 BCC``
BCC is the XOR of every preceding byte.

The query-all reply is as long as the *board* is wide (``BoardSpec.status_width``), whatever
number of locks is wired: unwired inputs read 0. DESIGN's vector ``80 01 00 00 FB 33 49`` is
such a reply from a 24-input board. By default the last data byte holds channels 1-8, as in
that vector; ``status_byte_order="first"`` models the boards that put it first.
ST follows the same input level as the bit map (level 1 -> 0x11, level 0 -> 0x00), so the one
polarity setting (``locked_level``) covers both forms.
"""

from __future__ import annotations

from firmware_bridge.checksums import xor8
from simulator.board import BoardView
from simulator.protocols.base import BoardProtocol, Request, pack_bits, skip_to

UNLOCK_HEAD, QUERY_HEAD = 0x8A, 0x80
UNLOCK_CMD, QUERY_CMD = 0x11, 0x33
ST_HIGH, ST_LOW = 0x11, 0x00


class Bcc8a(BoardProtocol):
    name = "bcc-8a"
    LENGTH = 5
    COMMANDS = {(UNLOCK_HEAD, UNLOCK_CMD): "unlock", (QUERY_HEAD, QUERY_CMD): "query"}

    def seal(self, body: bytes) -> bytes:
        return body + bytes([xor8(body)])

    def parse(self, buffer: bytes) -> tuple[int, Request | None]:
        heads = bytes([UNLOCK_HEAD, QUERY_HEAD])
        if not buffer:
            return 0, None
        if buffer[0] not in heads:
            return skip_to(buffer, heads), None
        if len(buffer) < self.LENGTH:
            return 0, None
        frame = bytes(buffer[: self.LENGTH])
        command = self.COMMANDS.get((frame[0], frame[3]))
        if command is None or not self.sealed_ok(frame):
            return 1, None
        if frame[2] == 0:
            command = "query_all" if command == "query" else "unlock_all"
        return self.LENGTH, Request(raw=frame, address=frame[1], command=command, channel=frame[2])

    def respond(self, request: Request, board: BoardView) -> bytes | None:
        spec = board.spec
        if request.command == "query_all":
            data = pack_bits(board.levels(), spec.status_width // 8)
            if spec.status_byte_order == "last":
                data.reverse()
            return self.seal(bytes([QUERY_HEAD, spec.address, *data, QUERY_CMD]))
        if request.command == "unlock_all":
            # 8A BOARD 00 11 opens every lock (CSDN spec, see the firmware_bridge codec); no
            # reply format is documented, so this board stays silent after it.
            board.unlock_all()
            return None
        channel = request.channel
        if not 1 <= channel <= spec.status_width:
            return None  # no such input on this board: it stays silent
        if request.command == "unlock":
            board.unlock(channel)
        levels = board.levels()
        level = levels[channel - 1] if channel <= len(levels) else 0
        head = UNLOCK_HEAD if request.command == "unlock" else QUERY_HEAD
        st = ST_HIGH if level else ST_LOW
        return self.seal(bytes([head, spec.address, channel, st]))
