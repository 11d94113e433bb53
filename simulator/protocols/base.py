"""What every board-side protocol provides, and the little helpers they share.

A board-side protocol is the mirror image of a master codec: it parses *requests* out of a
byte stream (resyncing past noise, never raising) and builds *replies* from a board's
inputs. Parsing follows the streaming convention of firmware_bridge: ``parse(buffer)``
returns ``(consumed, request)``; consumed 0 means "need more bytes", consumed > 0 with no
request means those bytes were noise and are dropped.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from simulator.board import BoardView


@dataclass(frozen=True)
class Request:
    raw: bytes
    address: int  # board address the frame is for
    command: str
    channel: int | None = None  # 1-based; None for board-wide commands
    value: int | None = None  # protocol-specific argument (coil value, count...)
    start: int | None = None  # modbus: first coil/input address
    channels: tuple[int, ...] = ()  # several channels at once (8A batch unlock)


class BoardProtocol(ABC):
    name: str
    broadcast: int | None = None  # an address every board of the bus acts on, if any

    def report(self, board: BoardView, channel: int) -> bytes | None:
        """The frame a board that pushes door changes sends when ``channel``'s door moved;
        None for families that never push."""
        return None

    def frame_end_silence(self, baud: int) -> float:
        """Seconds of silence after a request before the board knows the frame ended and
        may act on it (with wire timing). Families with fixed-length frames know from the
        length: none."""
        return 0.0

    @abstractmethod
    def parse(self, buffer: bytes) -> tuple[int, Request | None]:
        """Take one request (or some noise) off the front of ``buffer``."""

    @abstractmethod
    def respond(self, request: Request, board: BoardView) -> bytes | None:
        """Act on a request addressed to ``board``; the reply bytes, or None for silence."""

    @abstractmethod
    def seal(self, body: bytes) -> bytes:
        """Append the checksum."""

    def sealed_ok(self, frame: bytes) -> bool:
        """True if ``frame`` ends with a valid checksum of what precedes it."""
        cut = len(frame) - self.checksum_len
        return cut > 0 and self.seal(frame[:cut]) == frame

    checksum_len = 1

    def corrupt(self, frame: bytes) -> bytes:
        """The same frame with its last checksum byte wrong."""
        return frame[:-1] + bytes([frame[-1] ^ 0xFF])


def pack_bits(bits: Sequence[int], nbytes: int) -> list[int]:
    """Channel i+1 -> bit (i % 8) of byte i // 8; inputs past the list read 0."""
    out = [0] * nbytes
    for i, bit in enumerate(bits[: nbytes * 8]):
        if bit:
            out[i // 8] |= 1 << (i % 8)
    return out


def skip_to(buffer: bytes, starts: bytes) -> int:
    """How many leading bytes to drop so the buffer begins with a possible start byte."""
    for i in range(1, len(buffer)):
        if buffer[i] in starts:
            return i
    return len(buffer)
