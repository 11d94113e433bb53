"""What a board's replies mean: a status reply as a BoardStatus, and the readings before and
after a pulse as each lock's UnlockOutcome. No I/O; the bus feeds it what it read."""

from __future__ import annotations

from firmware_bridge.config import BoardConfig
from firmware_bridge.errors import ProtocolError
from firmware_bridge.protocols import Frame, LockProtocol
from firmware_bridge.status import BoardStatus, ChannelStatus, UnlockOutcome, UnlockResult


def board_status(protocol: LockProtocol, config: BoardConfig, frame: Frame) -> BoardStatus:
    """The channels a status reply reports, as ``config`` reads them (polarity, sensors)."""
    levels, sensors = protocol.inputs(frame, config)
    count = config.channels if config.channels is not None else len(levels)
    if len(levels) < count:
        reason = f"reports {len(levels)} inputs but is configured with {count} channels"
        raise ProtocolError(f"board {config.address} {reason}", board=config.address, reason=reason)
    if not config.sensors:
        sensors = None
    channels = [
        ChannelStatus(
            channel=i + 1,
            locked=levels[i] == config.locked_level,
            occupied=None if sensors is None else sensors[i] == config.occupied_level,
        )
        for i in range(count)
    ]
    return BoardStatus(board=config.address, protocol=protocol.name, channels=channels)


def unlock_outcomes(
    label: str,
    channels: list[int],
    before: BoardStatus | None,
    after: BoardStatus,
    sent_at: float,
) -> list[UnlockResult]:
    """Each pulsed channel's outcome: already open if it read open before the pulse,
    jammed if it still reads locked after it, opened otherwise."""
    board = after.board
    results = []
    for channel in channels:
        now = after.channel(channel)
        was = before.channel(channel) if before else None
        if now is None:
            raise ProtocolError(
                f"board {board} channel {channel}: {label} sent, but the board reported no "
                f"channel {channel}",
                board=board,
                channel=channel,
            )
        if was is not None and not was.locked:
            outcome = UnlockOutcome.ALREADY_OPEN
        elif now.locked:
            outcome = UnlockOutcome.JAMMED
        else:
            outcome = UnlockOutcome.OPENED
        results.append(UnlockResult(board, channel, outcome, now, sent_at))
    return results
