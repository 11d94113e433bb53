"""The board edge: the only place that talks to firmware_bridge.

Each RS-485 bus is driven by ONE worker thread (an executor with max_workers=1): LockBus is
blocking and a bus carries one transaction at a time anyway, so one thread per bus keeps the
order of unlocks and polls exactly as they were asked for, and the event loop never blocks
on a serial port. firmware_bridge errors are translated here, once, into
CompartmentUnavailable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from firmware_bridge.errors import BoardTimeout, BridgeError, LinkError, ProtocolError
from firmware_bridge.status import (
    BoardHealth,
    BoardStatus,
    DoorReport,
    UnlockOutcome,
    UnlockResult,
)
from locker_controller.config import BusSettings, ControllerConfig
from locker_controller.errors import CompartmentUnavailable, ConfigError

log = logging.getLogger(__name__)


class LockBusLike(Protocol):
    def status(self, board: int) -> BoardStatus: ...
    def unlock(self, board: int, channel: int) -> UnlockResult: ...
    def health(self, board: int) -> BoardHealth: ...
    def close(self) -> None: ...


BusOpener = Callable[[BusSettings], LockBusLike]


def open_lock_bus(settings: BusSettings) -> LockBusLike:
    from firmware_bridge import LockBus

    try:
        return LockBus.open(
            settings.port,
            settings.protocol,
            baud=settings.baud,
            boards=settings.board_configs(),
            rs485=settings.rs485,
            timeout=settings.timeout_s,
        )
    except BridgeError as err:
        raise ConfigError(f"cannot open bus {settings.port}: {err}") from None


@dataclass(frozen=True)
class Wiring:
    number: int
    bus: int
    board: int
    channel: int


class PollFailure(Exception):
    """A board could not be read this round; ``kind`` says why (timeout, protocol, link)."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class Cabinet:
    def __init__(self, config: ControllerConfig, opener: BusOpener = open_lock_bus) -> None:
        self._settings = config.buses
        self._opener = opener
        self._buses: list[LockBusLike] = []
        self._workers: list[ThreadPoolExecutor] = []
        self.wiring = {
            c.number: Wiring(c.number, c.bus, c.board, c.channel) for c in config.compartments
        }

    def open(self) -> None:
        try:
            for i, settings in enumerate(self._settings):
                self._buses.append(self._opener(settings))
                self._workers.append(
                    ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lockbus-{i}")
                )
        except ConfigError:
            self.close()
            raise

    def close(self) -> None:
        for worker in self._workers:
            worker.shutdown(wait=True, cancel_futures=True)
        for bus in self._buses:
            bus.close()
        self._workers.clear()
        self._buses.clear()

    @property
    def bus_count(self) -> int:
        return len(self._settings)

    def boards(self, bus: int) -> list[int]:
        return [b.address for b in self._settings[bus].boards]

    def compartments_on(self, bus: int, board: int) -> list[Wiring]:
        return [w for w in self.wiring.values() if w.bus == bus and w.board == board]

    async def _run(self, bus: int, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._workers[bus], fn, *args)

    def start_unlock(self, number: int) -> asyncio.Future[UnlockResult]:
        """Hand the unlock to the bus thread now; the frame goes out as soon as it is free."""
        wiring = self.wiring.get(number)
        if wiring is None:
            raise CompartmentUnavailable(number, "no such compartment")
        loop = asyncio.get_running_loop()
        bus = self._buses[wiring.bus]
        return loop.run_in_executor(
            self._workers[wiring.bus], bus.unlock, wiring.board, wiring.channel
        )

    async def finish_unlock(
        self, number: int, pending: asyncio.Future[UnlockResult]
    ) -> UnlockResult:
        wiring = self.wiring[number]
        try:
            result = await pending
        except BridgeError as err:
            raise CompartmentUnavailable(number, f"board {wiring.board}: {err}") from None
        if result.outcome is UnlockOutcome.NO_RESPONSE:
            log.warning("compartment %s: board %s did not answer the unlock", number, wiring.board)
        return result

    async def unlock(self, number: int) -> UnlockResult:
        return await self.finish_unlock(number, self.start_unlock(number))

    async def door_reports(self, bus: int) -> list[DoorReport]:
        """Door changes the bus's boards pushed unasked (8A firmware that reports them),
        decoded while the bus was busy with other exchanges; [] where the bus has none."""
        take = getattr(self._buses[bus], "door_reports", None)
        if take is None:
            return []
        try:
            return await self._run(bus, take)
        except BridgeError as err:
            log.warning("bus %s: door reports unreadable: %s", bus, err)
            return []

    def wiring_at(self, bus: int, board: int, channel: int) -> Wiring | None:
        return next(
            (
                w
                for w in self.wiring.values()
                if w.bus == bus and w.board == board and w.channel == channel
            ),
            None,
        )

    async def status(self, bus: int, board: int) -> BoardStatus:
        try:
            return await self._run(bus, self._buses[bus].status, board)
        except BoardTimeout as err:
            raise PollFailure("timeout", str(err)) from None
        except ProtocolError as err:
            raise PollFailure("protocol", str(err)) from None
        except LinkError as err:
            raise PollFailure("link", str(err)) from None

    def healths(self) -> Sequence[tuple[int, BoardHealth]]:
        found = []
        for i, bus in enumerate(self._buses):
            for address in self.boards(i):
                found.append((i, bus.health(address)))
        return found
