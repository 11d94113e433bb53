"""The lock bus: a thread-safe, blocking API over one RS-485 line and its boards.

The asyncio controller calls it from a worker thread; the CLI calls it directly. Every
method that talks to a board goes through one BusTransaction, so calls from several threads
queue up instead of garbling each other, with unlocks ahead of status polls; the wait for a
lock pulse happens outside it, so other boards are served meanwhile. What the bus learns
about each board (health, latest status, reply width, pushed door reports) is kept in a
BoardBook.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence

from firmware_bridge.board_book import BoardBook
from firmware_bridge.config import BoardConfig, board_table, check_address
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
from firmware_bridge.reading import board_status, unlock_outcomes
from firmware_bridge.status import (
    BoardHealth,
    BoardStatus,
    ChannelStatus,
    DoorReport,
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
LISTEN_SLICE_S = 0.05  # door_reports() lets queued requests in this often while it listens


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
        self._boards = board_table(self.protocol, boards)
        self._book = BoardBook(self._boards, unreachable_after)
        transaction.on_notice = self._on_notice

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

    def close(self) -> None:
        self._transaction.transport.close()

    def __enter__(self) -> LockBus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reading boards ------------------------------------------------------------------

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

    def scan(self, addresses: Iterable[int] | None = None) -> list[int]:
        """Addresses that answer a status query, tried once each (default: common DIP
        settings of the protocol, ``protocol.scan_addresses``)."""
        return self.survey(addresses).answered

    def survey(
        self,
        addresses: Iterable[int] | None = None,
        progress: Callable[[int, int, int, str], object] | None = None,
    ) -> ScanResult:
        """Like ``scan``, and also the addresses where something answered garbled (two
        boards on one DIP address, noise, the wrong protocol), with what was heard.
        ``progress(address, tried, of, verdict)`` hears of each address as it is done
        (verdict: ``answers``, ``silent`` or ``garbled``)."""
        candidates = list(self.protocol.scan_addresses if addresses is None else addresses)
        for address in candidates:
            check_address(self.protocol, address)
        result = ScanResult(answered=[], garbled={})
        for tried, address in enumerate(candidates, 1):
            try:
                self._status(self.config(address), retries=0)
            except BoardTimeout:
                verdict = "silent"
            except ProtocolError as err:
                log.warning("scan: address %s answered garbled: %s", address, err)
                result.garbled[address] = err.reason
                verdict = "garbled"
            else:
                result.answered.append(address)
                verdict = "answers"
            if progress is not None:
                progress(address, tried, len(candidates), verdict)
        return result

    def door_reports(self, wait: float = 0.0) -> list[DoorReport]:
        """Door changes boards pushed of their own accord (8A firmware that reports them),
        oldest first, each returned once. With none waiting, watches the idle line up to
        ``wait`` seconds for one (requests from other threads still go first)."""
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not wait >= 0:
            raise ConfigError(f"wait must be 0 or more seconds, not {wait!r}")
        deadline = time.monotonic() + wait
        reports = self._book.take_reports()
        while not reports and (left := deadline - time.monotonic()) > 0:
            self._transaction.listen(min(left, LISTEN_SLICE_S))
            reports = self._book.take_reports()
        return reports

    def health(self, board: int) -> BoardHealth:
        check_address(self.protocol, board)
        return self._book.health(board)

    def healths(self) -> list[BoardHealth]:
        """Health of every configured board and every board that ever answered."""
        return self._book.healths()

    def latest_status(self, board: int) -> tuple[float, BoardStatus] | None:
        """The last status read from ``board`` and when (time.monotonic()), if any."""
        return self._book.latest(board)

    # -- driving locks -------------------------------------------------------------------

    def unlock(self, board: int, channel: int) -> UnlockResult:
        """Pulse one lock and report what physically happened (see UnlockOutcome).

        Silence is the outcome NO_RESPONSE, not an exception. Raises ConfigError for a bad
        board or channel, BoardRefusal when the board refuses, ProtocolError when the status
        read after the pulse is garbled, LinkError when the port fails; each names the board
        and channel and says whether the unlock frame was sent.
        """
        config = self.config(board)
        request = self.protocol.unlock(board, config.wire_channel(channel), config.pulse_ms)
        return self._unlock(config, request, [channel], "unlock")[0]

    def unlock_all(self, board: int) -> list[UnlockResult]:
        """Pulse every lock of ``board`` at once, where the protocol has the request; one
        result per channel (the configured ones, or as many as the board reports)."""
        config = self.config(board)
        request = self.protocol.unlock_all(board)  # ConfigError where there is none
        return self._unlock(config, request, None, "unlock-all")

    def unlock_many(self, board: int, channels: Sequence[int]) -> list[UnlockResult]:
        """Pulse the given locks of ``board`` in one frame (8A batch unlock)."""
        config = self.config(board)
        chosen = sorted({config.check_channel(channel) for channel in channels})
        request = self.protocol.unlock_many(board, [config.wire_channel(c) for c in chosen])
        return self._unlock(config, request, chosen, "batch unlock")

    def hold_open(self, board: int, channel: int) -> UnlockResult:
        """Keep an electromagnetic lock powered (released) until ``release_hold``: staff
        loading a run of compartments. The outcome is read as for an unlock."""
        config = self.config(board)
        request = self.protocol.keep_power(board, config.wire_channel(channel), True)
        return self._unlock(config, request, [channel], "keep-power")[0]

    def release_hold(self, board: int, channel: int) -> ChannelStatus:
        """Cut the power ``hold_open`` kept on; the channel as read afterwards."""
        config = self.config(board)
        request = self.protocol.keep_power(board, config.wire_channel(channel), False)
        self._send_unanswered(config, request, channel, "keep-power-off")
        time.sleep(PULSE_MARGIN_S)
        status = self._status(config, retries=None, urgent=True).channel(channel)
        assert status is not None  # check_channel kept it within the board
        return status

    def set_pulse_time(self, board: int, pulse_ms: int) -> int:
        """Store ``pulse_ms`` as the board's own lock pulse (cu16 CMD 37); the pulse the
        board keeps (rounded up to its steps). It confirms nothing: an unlock shows it."""
        request = self.protocol.pulse_time(board, pulse_ms)
        self._send_unanswered(self.config(board), request, None, "pulse time")
        return request.pulse_ms

    # -- internals -----------------------------------------------------------------------

    def _on_notice(self, frame: Frame) -> None:
        """A frame a board sent unasked; door reports update what we know of the door."""
        found = self.protocol.reported_input(frame)
        if found is None:
            return
        wire_channel, level = found
        try:
            config = self.config(frame.board)
        except ConfigError:
            log.debug("door report from board %s, which this bus cannot have", frame.board)
            return
        channel = wire_channel - config.channel_base + 1
        if not 1 <= channel <= (config.channels or self.protocol.max_channels):
            log.debug("board %s reported channel %s, which it does not have", frame.board, channel)
            return
        self._book.heard(frame.board)
        locked = level == config.locked_level
        self._book.report(frame.board, ChannelStatus(channel, locked=locked, occupied=None))

    def _exchange(
        self,
        board: int,
        request: Request,
        *,
        expect_reply: bool = True,
        retries: int | None,
        urgent: bool = False,
        counts: bool = True,
    ) -> Exchange:
        """One request through the transaction. ``counts``: whether silence counts against
        the board's health (an unlock's missing acknowledgement does not: the status read
        after it says whether the board is there)."""
        try:
            exchange = self._transaction.execute(
                request, expect_reply=expect_reply, retries=retries, urgent=urgent
            )
        except BoardTimeout:
            if counts:
                self._book.timed_out(board)
            raise
        finally:
            for trailed in self._transaction.take_trailed():
                if self._book.forget_width(trailed):
                    log.warning(
                        "board %s: more bytes followed a status reply framed on its learnt "
                        "width; learning the width again",
                        trailed,
                    )
        if exchange.frame is not None:
            self._book.heard(board)
        return exchange

    def _send_unanswered(
        self, config: BoardConfig, request: Request, channel: int | None, label: str
    ) -> float:
        """Send a request no board answers; when it went out."""
        try:
            return self._exchange(
                config.address, request, expect_reply=False, retries=0, urgent=True
            ).sent_at
        except LinkError as err:
            where = f"board {config.address}" + (f" channel {channel}" if channel else "")
            what = "not sent" if err.unsent else "may not have been sent"
            raise restated(err, f"{where}: {label} {what}: {err.reason}", channel=channel) from err

    def _status(
        self, config: BoardConfig, *, retries: int | None, urgent: bool = False
    ) -> BoardStatus:
        learnt = None if config.status_width else self._book.width(config.address)
        request = self.protocol.query_all(
            config.address,
            config.channels or self.protocol.max_channels,
            config.status_width or learnt,
        )
        try:
            exchange = self._exchange(config.address, request, retries=retries, urgent=urgent)
        except (BoardTimeout, ProtocolError):
            if learnt is not None:
                self._book.forget_width(config.address)
            raise
        assert exchange.frame is not None
        status = board_status(self.protocol, config, exchange.frame)
        # A width is learnt only from replies framed on silence (two alike: BoardBook).
        framed_on_silence = not (config.status_width or learnt)
        width = self.protocol.reply_width(exchange.frame) if framed_on_silence else None
        self._book.saw_status(status, width)
        return status

    def _look_before(self, config: BoardConfig, label: str) -> BoardStatus | None:
        """The board's status before an unlock: the latest poll if fresh, else one read now.
        A board that does not answer it still gets the unlock (it may have missed one
        query only); the outcome then cannot say "already open"."""
        fresh = self._book.fresh(config.address, FRESH_S)
        if fresh is not None:
            return fresh
        try:
            return self._status(config, retries=0, urgent=True)
        except (BoardTimeout, ProtocolError) as err:
            log.debug("board %s: no status before %s: %s", config.address, label, err)
            return None

    def _unlock(
        self, config: BoardConfig, request: Request, channels: list[int] | None, label: str
    ) -> list[UnlockResult]:
        """Pulse ``channels`` or, for None, every channel of the board."""
        board = config.address
        channel = channels[0] if channels is not None and len(channels) == 1 else None
        where = f"board {board}" + (f" channel {channel}" if channel is not None else "")
        try:
            before = self._look_before(config, label)
        except LinkError as err:
            message = f"{where}: {label} not sent: {err.reason}"
            raise restated(err, message, channel=channel) from err
        # One attempt only: a lost reply does not mean a lost command, and a second pulse on
        # a door that already opened would count as a double open. A board that does not
        # answer unlocks (cu48), or a request nobody documented a reply to, is not waited on.
        try:
            sent_at = self._exchange(
                board,
                request,
                expect_reply=config.answers_unlock and bool(request.expected()),
                retries=0,
                urgent=True,
                counts=False,
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
        return unlock_outcomes(label, channels, before, after, sent_at)
