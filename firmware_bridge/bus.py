"""The lock bus: a thread-safe, blocking API over one RS-485 line and its boards.

The asyncio controller calls it from a worker thread; the CLI calls it directly. Every
method that talks to a board goes through one BusTransaction, so calls from several threads
queue up instead of garbling each other, with unlocks ahead of status polls; the wait for a
lock pulse happens outside it, so other boards are served meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from firmware_bridge.config import BoardConfig, check_address
from firmware_bridge.errors import (
    BoardRefusal,
    BoardTimeout,
    BridgeError,
    ConfigError,
    LinkError,
    ProtocolError,
    restated,
)
from firmware_bridge.protocols import Frame, LockProtocol, Request, get_protocol
from firmware_bridge.status import (
    BoardHealth,
    BoardStatus,
    ChannelStatus,
    ScanResult,
    UnlockOutcome,
    UnlockResult,
)
from firmware_bridge.transaction import BusTransaction, Exchange
from firmware_bridge.transport import SerialTransport

log = logging.getLogger(__name__)

# A status seen this recently still tells whether a door was open before our unlock, so the
# unlock frame goes out at once (the controller polls every board several times a second:
# its unlocks never wait for an extra read). Any older and a door may have been opened or
# shut since, so the board is read first: without that, the read after the pulse cannot tell
# "opened" from "was already open".
FRESH_S = 1.0
# Time after the pulse for the latch to settle and a sprung door to swing clear of its sensor.
PULSE_MARGIN_S = 0.15


@dataclass
class _Health:
    consecutive_timeouts: int = 0
    last_seen: float | None = None  # time.time() of the last valid frame


class LockBus:
    def __init__(
        self,
        transaction: BusTransaction,
        *,
        boards: Iterable[BoardConfig] = (),
        unreachable_after: int = 3,
    ) -> None:
        self._transaction = transaction
        self.protocol: LockProtocol = transaction.protocol
        self.unreachable_after = unreachable_after
        self._boards: dict[int, BoardConfig] = {}
        for config in boards:
            if config.protocol != self.protocol.name:
                raise ConfigError(
                    f"board {config.address} is configured as {config.protocol} on a "
                    f"{self.protocol.name} bus",
                    board=config.address,
                )
            if config.address in self._boards:
                raise ConfigError(
                    f"board {config.address} is configured twice", board=config.address
                )
            self._boards[config.address] = config
        self._state = threading.Lock()  # guards the two dicts below
        self._latest: dict[int, tuple[float, BoardStatus]] = {}  # board -> (monotonic, status)
        self._health: dict[int, _Health] = {address: _Health() for address in self._boards}

    @classmethod
    def open(
        cls,
        url: str,
        protocol: str,
        *,
        baud: int | None = None,
        boards: list[BoardConfig] | None = None,
        rs485: bool = False,
        timeout: float | None = None,
        retries: int = 2,
        unreachable_after: int = 3,
        drain_quiet: float | None = None,
    ) -> LockBus:
        """Open the port at ``url`` (any pyserial URL) for boards speaking ``protocol``."""
        codec = get_protocol(protocol)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"retries must be 0 or more, not {retries!r}")
        if timeout is not None and not timeout > 0:
            raise ConfigError(f"timeout must be more than 0 s, not {timeout!r}")
        if baud is not None and (isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0):
            raise ConfigError(f"baud must be a positive integer, not {baud!r}")
        if not isinstance(unreachable_after, int) or unreachable_after < 1:
            raise ConfigError(f"unreachable_after must be 1 or more, not {unreachable_after!r}")
        transport = SerialTransport.open(url, baud or codec.baud, rs485=rs485)
        transaction = BusTransaction(
            transport, codec, timeout=timeout, retries=retries, drain_quiet=drain_quiet
        )
        try:
            return cls(transaction, boards=boards or (), unreachable_after=unreachable_after)
        except ConfigError:
            transport.close()
            raise

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        self._transaction.transport.close()

    def __enter__(self) -> LockBus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- boards --------------------------------------------------------------------------

    def config(self, board: int) -> BoardConfig:
        """The configuration of ``board``; protocol defaults for boards nobody configured."""
        config = self._boards.get(board) if isinstance(board, int) else None
        if config is None:
            config = BoardConfig(self.protocol.name, check_address(self.protocol, board))
        return config

    def status(self, board: int) -> BoardStatus:
        """Every channel of ``board``. Raises BoardTimeout, ProtocolError or LinkError."""
        return self._status(self.config(board), retries=None)

    def channel_status(self, board: int, channel: int) -> ChannelStatus:
        """One channel of ``board``, by the protocol's query-one request (on Kerong boards
        the status query: their replies always carry the whole board). Raises ConfigError,
        BoardTimeout, ProtocolError or LinkError naming the board and channel."""
        config = self.config(board)
        request = self.protocol.query_one(board, config.wire_channel(channel))
        where = f"board {board} channel {channel}"
        try:
            exchange = self._exchange(board, request, retries=None)
        except BridgeError as err:
            raise restated(err, f"{where}: {err.reason}", channel=channel) from err
        assert exchange.frame is not None
        reading = self.protocol.channel_inputs(request, exchange.frame, config, channel)
        if reading is None:
            raise ProtocolError(
                f"{where}: the board's reply carries no channel {channel}",
                board=board,
                channel=channel,
            )
        level, sensor = reading
        occupied = None if sensor is None or not config.sensors else sensor == config.occupied_level
        return ChannelStatus(channel, locked=level == config.locked_level, occupied=occupied)

    def unlock(self, board: int, channel: int) -> UnlockResult:
        """Pulse one lock and report what physically happened (see UnlockOutcome).

        Silence is the outcome NO_RESPONSE, not an exception. Raises ConfigError for a bad
        board or channel, BoardRefusal when the board refuses, ProtocolError when the status
        read after the pulse is garbled, LinkError when the port fails; each names the board
        and channel and says whether the unlock frame was sent.
        """
        config = self.config(board)
        request = self.protocol.unlock(board, config.wire_channel(channel), config.pulse_ms)
        return self._unlock(config, request, [channel])[0]

    def unlock_all(self, board: int) -> list[UnlockResult]:
        """Pulse every lock of ``board`` at once, where the protocol has the request; one
        result per channel (the configured ones, or as many as the board reports)."""
        config = self.config(board)
        request = self.protocol.unlock_all(board)  # ConfigError where there is none
        return self._unlock(config, request, None)

    def scan(self, addresses: Iterable[int] | None = None) -> list[int]:
        """Addresses that answer a status query, tried once each (default: common DIP
        settings of the protocol, ``protocol.scan_addresses``)."""
        return self.survey(addresses).answered

    def survey(self, addresses: Iterable[int] | None = None) -> ScanResult:
        """Like ``scan``, and also the addresses where something answered garbled (two
        boards on one DIP address, noise, the wrong protocol), with what was heard."""
        candidates = list(self.protocol.scan_addresses if addresses is None else addresses)
        for address in candidates:
            check_address(self.protocol, address)
        result = ScanResult(answered=[], garbled={})
        for address in candidates:
            try:
                self._status(self.config(address), retries=0)
            except BoardTimeout:
                continue
            except ProtocolError as err:
                log.warning("scan: address %s answered garbled: %s", address, err)
                result.garbled[address] = err.reason
                continue
            result.answered.append(address)
        return result

    def health(self, board: int) -> BoardHealth:
        check_address(self.protocol, board)
        with self._state:
            record = self._health.get(board, _Health())
            return self._health_of(board, record)

    def healths(self) -> list[BoardHealth]:
        """Health of every configured board and every board that ever answered."""
        with self._state:
            return [self._health_of(b, r) for b, r in sorted(self._health.items())]

    def latest_status(self, board: int) -> tuple[float, BoardStatus] | None:
        """The last status read from ``board`` and when (time.monotonic()), if any."""
        with self._state:
            return self._latest.get(board)

    # -- internals -----------------------------------------------------------------------

    def _health_of(self, board: int, record: _Health) -> BoardHealth:
        return BoardHealth(
            address=board,
            reachable=record.consecutive_timeouts < self.unreachable_after,
            consecutive_timeouts=record.consecutive_timeouts,
            last_seen=record.last_seen,
        )

    def _exchange(
        self,
        board: int,
        request: Request,
        *,
        expect_reply: bool = True,
        retries: int | None,
        urgent: bool = False,
    ) -> Exchange:
        try:
            exchange = self._transaction.execute(
                request, expect_reply=expect_reply, retries=retries, urgent=urgent
            )
        except BoardTimeout:
            with self._state:
                record = self._health.setdefault(board, _Health())
                record.consecutive_timeouts += 1
                if record.consecutive_timeouts == self.unreachable_after:
                    log.warning("board %s is unreachable", board)
            raise
        if exchange.frame is not None:
            with self._state:
                record = self._health.setdefault(board, _Health())
                if record.consecutive_timeouts >= self.unreachable_after:
                    log.info("board %s answers again", board)
                record.consecutive_timeouts = 0
                record.last_seen = time.time()
        return exchange

    def _status(
        self, config: BoardConfig, *, retries: int | None, urgent: bool = False
    ) -> BoardStatus:
        request = self.protocol.query_all(
            config.address, config.channels or self.protocol.max_channels
        )
        exchange = self._exchange(config.address, request, retries=retries, urgent=urgent)
        assert exchange.frame is not None
        status = self._to_status(config, exchange.frame)
        with self._state:
            self._latest[config.address] = (time.monotonic(), status)
        return status

    def _to_status(self, config: BoardConfig, frame: Frame) -> BoardStatus:
        levels, sensors = self.protocol.inputs(frame, config)
        count = config.channels if config.channels is not None else len(levels)
        if len(levels) < count:
            reason = f"reports {len(levels)} inputs but is configured with {count} channels"
            raise ProtocolError(
                f"board {config.address} {reason}", board=config.address, reason=reason
            )
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
        return BoardStatus(board=config.address, protocol=self.protocol.name, channels=channels)

    def _fresh(self, board: int) -> BoardStatus | None:
        with self._state:
            seen = self._latest.get(board)
        if seen is None or time.monotonic() - seen[0] > FRESH_S:
            return None
        return seen[1]

    def _look_before(self, config: BoardConfig, label: str) -> BoardStatus | None:
        """The board's status before an unlock: the latest poll if fresh, else one read now.
        A board that does not answer it still gets the unlock (it may have missed one
        query only); the outcome then cannot say "already open"."""
        fresh = self._fresh(config.address)
        if fresh is not None:
            return fresh
        try:
            return self._status(config, retries=0, urgent=True)
        except (BoardTimeout, ProtocolError) as err:
            log.debug("board %s: no status before %s: %s", config.address, label, err)
            return None

    def _unlock(
        self, config: BoardConfig, request: Request, channels: list[int] | None
    ) -> list[UnlockResult]:
        """Pulse ``channels`` (one) or, for None, every channel of the board."""
        board = config.address
        channel = channels[0] if channels is not None else None
        label = "unlock" if channel is not None else "unlock-all"
        where = f"board {board}" + (f" channel {channel}" if channel is not None else "")
        try:
            before = self._look_before(config, label)
        except LinkError as err:
            message = f"{where}: {label} not sent: {err.reason}"
            raise restated(err, message, channel=channel) from err
        # One attempt only: a lost reply does not mean a lost command, and a second pulse on
        # a door that already opened would count as a double open.
        try:
            sent_at = self._exchange(
                board,
                request,
                # Requests whose reply nobody documented (8A open-all) are not waited on.
                expect_reply=config.answers_unlock and bool(request.REPLIES),
                retries=0,
                urgent=True,
            ).sent_at
        except BoardTimeout as err:
            sent_at = err.sent_at if err.sent_at is not None else time.monotonic()
        except BoardRefusal as err:
            # A well-formed "no": nothing was pulsed.
            raise restated(err, f"{where}: {label} refused: {err.reason}", channel=channel) from err
        except ProtocolError as err:
            # A garbled acknowledgement still means the board heard something: look.
            log.warning("%s: garbled %s reply: %s", where, label, err.reason)
            sent_at = time.monotonic()
        except LinkError as err:
            what = "not sent" if err.unsent else "may not have been sent"
            message = f"{where}: {label} {what}: {err.reason}"
            raise restated(err, message, channel=channel) from err
        settle = sent_at + config.pulse_ms / 1000 + PULSE_MARGIN_S - time.monotonic()
        if settle > 0:
            time.sleep(settle)
        try:
            after = self._status(config, retries=None, urgent=True)
        except BoardTimeout:
            if channels is None:
                known = before.channels if before else []
                count = config.channels or len(known) or self.protocol.max_channels
                channels = list(range(1, count + 1))
            return [
                UnlockResult(board, ch, UnlockOutcome.NO_RESPONSE, None, sent_at) for ch in channels
            ]
        except (ProtocolError, LinkError) as err:
            message = f"{where}: {label} sent, but reading the board after it failed: {err.reason}"
            raise restated(err, message, channel=channel) from err
        if channels is None:
            channels = [c.channel for c in after.channels]
        results = []
        for ch in channels:
            now = after.channels[ch - 1] if ch <= len(after.channels) else None
            was = before.channels[ch - 1] if before and ch <= len(before.channels) else None
            if now is None:
                raise ProtocolError(
                    f"board {board} channel {ch}: {label} sent, but the board reported no "
                    f"channel {ch}",
                    board=board,
                    channel=ch,
                )
            if was is not None and not was.locked:
                outcome = UnlockOutcome.ALREADY_OPEN
            elif now.locked:
                outcome = UnlockOutcome.JAMMED
            else:
                outcome = UnlockOutcome.OPENED
            results.append(UnlockResult(board, ch, outcome, now, sent_at))
        return results
