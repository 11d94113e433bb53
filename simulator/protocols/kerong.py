"""Kerong CU16 / CU48 / CU48B lock boards, board side (DESIGN.md §4).

cu16:  request ``02 ADDR CMD 03 SUM`` with ADDR = board<<4 | (lock-1); CMD 30 status,
       31 unlock, 33 unlock all; status reply ``02 ADDR 35 L1-8 L9-16 IR1-8 IR9-16 03 SUM``.
       Set pulse time ``02 ADDR 37 HI LO 03 SUM`` (10 ms units) is 7 bytes long; the board
       stores it for the whole board and answers nothing.
cu48:  as Kerong's "CU48 Protocol And Introduction" v2.1 says: request ``02 ADDR LOCK CMD 03
       SUM`` with ADDR 00-09 a board and 0A every board (each answers in turn, see
       VirtualBus), LOCK 00-2F lock 1-48 and 30 every lock; CMD 50 query -> ``02 ADDR xx 65
       D1..D6 03 SUM`` where xx means nothing (a different value every reply unless
       ``BoardSpec.reply_lock_byte`` pins it); CMD 51 unlock -> no reply.
cu48b: as cu48 with CMD 60/61; reply ``02 ADDR 00 75 L1..L6 S1..S6 03 SUM`` (drivers only).
SUM is the low byte of the sum of every preceding byte.

Whether a board answers an unlock follows ``BoardSpec.answers_unlock`` (for cu48 the
document's silence by default; the other families answer unless told not to). The cu16
status reply echoes the request's ADDR byte: what a master matching on the board nibble or
on the whole byte both accept.
"""

from __future__ import annotations

import itertools

from firmware_bridge.checksums import sum8
from simulator.board import BoardView
from simulator.protocols.base import BoardProtocol, Request, pack_bits, skip_to

STX, ETX = 0x02, 0x03
# Values a cu48 puts in its reply's meaningless LOCK byte, in turn: 00 as in the vendor's
# example, and others a master must ignore just as well.
JUNK_LOCK_BYTES = (0x00, 0x30, 0xA5, 0x2F, 0xFF, 0x01)


class KerongCu16(BoardProtocol):
    name = "kerong-cu16"
    LENGTH = 5
    CMD_AT = 2
    STATUS_REPLY = 0x35
    COMMANDS = {0x30: "status", 0x31: "unlock", 0x33: "unlock_all", 0x37: "pulse_time"}
    LONGER = {0x37: 7}  # commands with argument bytes

    def seal(self, body: bytes) -> bytes:
        return body + bytes([sum8(body)])

    def parse(self, buffer: bytes) -> tuple[int, Request | None]:
        if not buffer:
            return 0, None
        if buffer[0] != STX:
            return skip_to(buffer, bytes([STX])), None
        if len(buffer) <= self.CMD_AT:
            return 0, None
        length = self.LONGER.get(buffer[self.CMD_AT], self.LENGTH)
        if len(buffer) < length:
            return 0, None
        frame = bytes(buffer[:length])
        if frame[-2] != ETX or not self.sealed_ok(frame) or frame[self.CMD_AT] not in self.COMMANDS:
            return 1, None
        return length, self._request(frame)

    def _request(self, frame: bytes) -> Request:
        addr = frame[1]
        command = self.COMMANDS[frame[2]]
        return Request(
            raw=frame,
            address=addr >> 4,
            command=command,
            # The low nibble names a lock only for unlock; status and unlock-all ignore it.
            channel=(addr & 0x0F) + 1 if command == "unlock" else None,
            value=frame[3] << 8 | frame[4] if command == "pulse_time" else addr,
        )

    def respond(self, request: Request, board: BoardView) -> bytes | None:
        if request.command == "unlock":
            board.unlock(request.channel)
        elif request.command == "unlock_all":
            board.unlock_all()
        elif request.command == "pulse_time":
            if request.value:  # 0 x 10 ms would be no pulse at all: a board keeps its own
                board.set_pulse_ms(request.value * 10)
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
    LONGER: dict[int, int] = {}
    DATA_BYTES = 6
    ALL_LOCKS: int | None = 0x30
    broadcast: int | None = 0x0A

    def __init__(self) -> None:
        self._junk = itertools.cycle(JUNK_LOCK_BYTES)

    def _request(self, frame: bytes) -> Request:
        command = self.COMMANDS[frame[3]]
        lock = frame[2]
        if command == "unlock" and lock == self.ALL_LOCKS:
            command = "unlock_all"
        return Request(
            raw=frame,
            address=frame[1],
            command=command,
            # LOCK is 0-based for unlocks; for a query any LOCK byte is accepted (one cu48b
            # driver sends 30, DESIGN.md §4).
            channel=lock + 1 if command == "unlock" else None,
            value=frame[1],
        )

    def status_reply(self, addr_byte: int, board: BoardView) -> bytes:
        # The board's own address, not the request's: a broadcast (0A) is answered by each
        # board under its own (the vendor's example: board 1 answers 02 01 ...).
        data = pack_bits(board.levels(), self.DATA_BYTES)
        pinned = board.spec.reply_lock_byte
        lock_byte = next(self._junk) if pinned is None else pinned
        return self.seal(bytes([STX, board.spec.address, lock_byte, self.STATUS_REPLY, *data, ETX]))


class KerongCu48b(KerongCu48):
    name = "kerong-cu48b"
    STATUS_REPLY = 0x75
    COMMANDS = {0x60: "status", 0x61: "unlock"}
    ALL_LOCKS = None  # no driver shows an unlock-all on a cu48b
    broadcast = None

    def status_reply(self, addr_byte: int, board: BoardView) -> bytes:
        locks = pack_bits(board.levels(), 6)
        sensors = pack_bits(board.sensors(), 6)
        address = board.spec.address
        return self.seal(bytes([STX, address, 0x00, self.STATUS_REPLY, *locks, *sensors, ETX]))
