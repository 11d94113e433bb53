"""What the bus reports about boards and locks. Channels are numbered from 1 everywhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class ChannelStatus:
    channel: int
    locked: bool  # False: the latch is back or the door is open
    occupied: bool | None  # None: the board has no occupancy sensor for it

    def to_dict(self) -> dict[str, object]:
        return {"channel": self.channel, "locked": self.locked, "occupied": self.occupied}


@dataclass(frozen=True)
class BoardStatus:
    board: int
    protocol: str
    channels: list[ChannelStatus]

    def channel(self, channel: int) -> ChannelStatus | None:
        for item in self.channels:
            if item.channel == channel:
                return item
        return None

    def to_dict(self) -> dict[str, object]:
        return {"board": self.board, "channels": [c.to_dict() for c in self.channels]}


class UnlockOutcome(StrEnum):
    OPENED = "opened"  # the door was seen open after the pulse
    ALREADY_OPEN = "already_open"  # it was open before we asked
    JAMMED = "jammed"  # the pulse fired (or was sent) but the lock still reads locked
    NO_RESPONSE = "no_response"  # the board never confirmed anything


@dataclass(frozen=True)
class UnlockResult:
    board: int
    channel: int
    outcome: UnlockOutcome
    status: ChannelStatus | None
    frame_sent_at: float  # time.monotonic() when the unlock frame was written to the port


@dataclass(frozen=True)
class DoorReport:
    """A door change a board reported of its own accord (8A firmware that pushes them)."""

    board: int
    status: ChannelStatus
    at: float  # time.monotonic() when the report was decoded

    def to_dict(self) -> dict[str, object]:
        return {"board": self.board, **self.status.to_dict()}


@dataclass(frozen=True)
class BoardHealth:
    address: int
    reachable: bool
    consecutive_timeouts: int
    last_seen: float | None  # time.time() of the last valid frame from this board
    # Exchanges it left unanswered (after the transaction's retries) since the bus opened: a
    # counter for metrics, where consecutive_timeouts starts again at every answer.
    timeouts: int = 0


@dataclass
class ScanResult:
    answered: list[int] = field(default_factory=list)  # addresses with a valid status reply
    garbled: dict[int, str] = field(default_factory=dict)  # address -> what was heard instead
