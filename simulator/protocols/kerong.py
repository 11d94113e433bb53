"""Kerong CU16 / CU48 / CU48B lock boards, board side (DESIGN.md §4).

cu16:  request ``02 ADDR CMD 03 SUM`` with ADDR = board<<4 | (lock-1);
       status reply ``02 ADDR 35 L1-8 L9-16 IR1-8 IR9-16 03 SUM``.
cu48:  request ``02 ADDR LOCK CMD 03 SUM`` (LOCK 0-based); reply ``02 ADDR 00 65 D1..D6 03 SUM``.
cu48b: as cu48 with CMD 60/61; reply ``02 ADDR 00 75 L1..L6 S1..S6 03 SUM``.
SUM is the low byte of the sum of every preceding byte.

Whether a board answers an unlock with its status frame or stays silent differs between
drivers, so it follows ``BoardSpec.answers_unlock``. The status reply echoes the request's
ADDR byte: that is what a master matching on the board nibble or the whole byte both accept.
CMD 37 (set pulse time) is accepted and ignored: no public driver shows its argument bytes.
"""

from __future__ import annotations

from firmware_bridge.checksums import sum8
from simulator.board import BoardView
from simulator.protocols.base import BoardProtocol, Request, pack_bits, skip_to

STX, ETX = 0x02, 0x03


class KerongCu16(BoardProtocol):
    name = "kerong-cu16"
    LENGTH = 5
    CMD_AT = 2
    STATUS_REPLY = 0x35
    COMMANDS = {0x30: "status", 0x31: "unlock", 0x33: "unlock_all", 0x37: "pulse_time"}

    def seal(self, body: bytes) -> bytes:
        return body + bytes([sum8(body)])

    def parse(self, buffer: bytes) -> tuple[int, Request | None]:
        if not buffer:
            return 0, None
        if buffer[0] != STX:
            return skip_to(buffer, bytes([STX])), None
        if len(buffer) < self.LENGTH:
            return 0, None
        frame = bytes(buffer[: self.LENGTH])
        if frame[-2] != ETX or not self.sealed_ok(frame) or frame[self.CMD_AT] not in self.COMMANDS:
            return 1, None
        return self.LENGTH, self._request(frame)

    def _request(self, frame: bytes) -> Request:
        addr = frame[1]
        command = self.COMMANDS[frame[2]]
        return Request(
            raw=frame,
            address=addr >> 4,
            command=command,
            # The low nibble names a lock only for unlock; status and unlock-all ignore it.
            channel=(addr & 0x0F) + 1 if command == "unlock" else None,
            value=addr,
        )

    def respond(self, request: Request, board: BoardView) -> bytes | None:
        if request.command == "unlock":
            board.unlock(request.channel)
        elif request.command == "unlock_all":
            board.unlock_all()
        elif request.command == "pulse_time":
            return None
        if request.command != "status" and not board.spec.answers_unlock:
            return None
        return self.status_reply(request.value, board)

    def status_reply(self, addr_byte: int, board: BoardView) -> bytes:
        locks = pack_bits(board.levels(), 2)
        sensors = pack_bits(board.sensors(), 2)
        return self.seal(bytes([STX, addr_byte, self.STATUS_REPLY, *locks, *sensors, ETX]))


class KerongCu48(KerongCu16):
    name = "kerong-cu48"
    LENGTH = 6
    CMD_AT = 3
    STATUS_REPLY = 0x65
    COMMANDS = {0x50: "status", 0x51: "unlock"}
    DATA_BYTES = 6

    def _request(self, frame: bytes) -> Request:
        return Request(
            raw=frame,
            address=frame[1],
            command=self.COMMANDS[frame[3]],
            # LOCK is 0-based for unlocks; for a query any LOCK byte is accepted (one cu48b
            # driver sends 30, DESIGN.md §4).
            channel=frame[2] + 1 if self.COMMANDS[frame[3]] == "unlock" else None,
            value=frame[1],
        )

    def status_reply(self, addr_byte: int, board: BoardView) -> bytes:
        data = pack_bits(board.levels(), self.DATA_BYTES)
        return self.seal(bytes([STX, addr_byte, 0x00, self.STATUS_REPLY, *data, ETX]))


class KerongCu48b(KerongCu48):
    name = "kerong-cu48b"
    STATUS_REPLY = 0x75
    COMMANDS = {0x60: "status", 0x61: "unlock"}

    def status_reply(self, addr_byte: int, board: BoardView) -> bytes:
        locks = pack_bits(board.levels(), 6)
        sensors = pack_bits(board.sensors(), 6)
        return self.seal(bytes([STX, addr_byte, 0x00, self.STATUS_REPLY, *locks, *sensors, ETX]))
