"""Generic RS-485 "8A" lock boards, board side (DESIGN.md §4 and tracker issue 12).

unlock       ``8A BOARD CH 11 BCC`` -> ``8A BOARD CH ST BCC``
open all     ``8A BOARD 00 11 BCC``, no reply (none is documented)
batch unlock ``90 BOARD S1 S2 S3 BCC`` (bit mask, S1 bit 0 = channel 1), no reply
keep power   ``9A BOARD CH 11 BCC`` holds the lock released, ``9B BOARD CH 11 BCC`` lets go;
             no reply
query one    ``80 BOARD CH 33 BCC`` -> ``80 BOARD CH ST BCC``
query all    ``80 BOARD 00 33 BCC`` -> ``80 BOARD Sn..S1 33 BCC``
door report  ``82 BOARD CH ST BCC``, pushed unasked when a door moves (``reports_doors``)
BCC is the XOR of every preceding byte. The 9A/9B/82 layouts are the firmware_bridge codec's
(only their head bytes are known from drivers; see firmware_bridge/protocols/bcc8a.py).

The query-all reply is as long as the *board* is wide (``BoardSpec.status_width``), whatever
number of locks is wired: unwired inputs read 0. DESIGN's vector ``80 01 00 00 FB 33 49`` is
such a reply from a 24-input board. Its data bytes are whatever the inputs read, ``33`` and
a fitting XOR included (``80 01 00 33 B2 33 33`` is one whole 24-input reply). Which data
byte holds channels 1-8 is ``status_byte_order``: by default the last on boards up to 24
inputs wide, the first on wider ones. ST follows the same input level as the bit map
(level 1 -> 0x11, level 0 -> 0x00), so the one polarity setting (``locked_level``) covers
both forms.
"""

from __future__ import annotations

from firmware_bridge.checksums import xor8
from simulator.board import BoardView
from simulator.protocols.base import BoardProtocol, Request, pack_bits, skip_to

UNLOCK_HEAD, QUERY_HEAD, REPORT_HEAD = 0x8A, 0x80, 0x82
BATCH_HEAD, HOLD_HEAD, RELEASE_HEAD = 0x90, 0x9A, 0x9B
UNLOCK_CMD, QUERY_CMD = 0x11, 0x33
ST_HIGH, ST_LOW = 0x11, 0x00
BATCH_LENGTH = 6  # 90 BOARD S1 S2 S3 BCC


class Bcc8a(BoardProtocol):
    name = "bcc-8a"
    LENGTH = 5
    HEADS = bytes([UNLOCK_HEAD, QUERY_HEAD, BATCH_HEAD, HOLD_HEAD, RELEASE_HEAD])
    COMMANDS = {
        (UNLOCK_HEAD, UNLOCK_CMD): "unlock",
        (QUERY_HEAD, QUERY_CMD): "query",
        (HOLD_HEAD, UNLOCK_CMD): "hold",
        (RELEASE_HEAD, UNLOCK_CMD): "release",
    }

    def seal(self, body: bytes) -> bytes:
        return body + bytes([xor8(body)])

    def parse(self, buffer: bytes) -> tuple[int, Request | None]:
        if not buffer:
            return 0, None
        if buffer[0] not in self.HEADS:
            return skip_to(buffer, self.HEADS), None
        length = BATCH_LENGTH if buffer[0] == BATCH_HEAD else self.LENGTH
        if len(buffer) < length:
            return 0, None
        frame = bytes(buffer[:length])
        if not self.sealed_ok(frame):
            return 1, None
        if frame[0] == BATCH_HEAD:
            mask = frame[2:5]
            chosen = tuple(i + 1 for i in range(24) if mask[i // 8] >> (i % 8) & 1)
            return length, Request(raw=frame, address=frame[1], command="batch", channels=chosen)
        command = self.COMMANDS.get((frame[0], frame[3]))
        if command is None or (frame[2] == 0 and command in ("hold", "release")):
            return 1, None
        if frame[2] == 0:
            command = "query_all" if command == "query" else "unlock_all"
        return length, Request(raw=frame, address=frame[1], command=command, channel=frame[2])

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
        if request.command == "batch":
            for channel in request.channels:
                board.unlock(channel)  # a lock the board has no driver for is ignored
            return None
        if request.command in ("hold", "release"):
            board.set_relay(request.channel, request.command == "hold")
            return None
        channel = request.channel
        if not 1 <= channel <= spec.status_width:
            return None  # no such input on this board: it stays silent
        if request.command == "unlock":
            board.unlock(channel)
        head = UNLOCK_HEAD if request.command == "unlock" else QUERY_HEAD
        return self._channel_frame(head, board, channel)

    def report(self, board: BoardView, channel: int) -> bytes | None:
        return self._channel_frame(REPORT_HEAD, board, channel)

    def _channel_frame(self, head: int, board: BoardView, channel: int) -> bytes:
        levels = board.levels()
        level = levels[channel - 1] if channel <= len(levels) else 0
        st = ST_HIGH if level else ST_LOW
        return self.seal(bytes([head, board.spec.address, channel, st]))
