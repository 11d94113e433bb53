"""Watching every door: board polling, debounce, derived door events, board health.

The board tells us lock feedback and (on some boards) infrared occupancy; everything else is
derived here. "Unlock sent" and "door seen open" are different facts (a lock can release
while the door stays shut), so they are different events. A door that opens without a recent
unlock of ours is ``door_forced``. A board that stops answering takes only its own
compartments out of service; it is then polled less often, because every poll of a silent
board costs a full timeout on the shared bus and would slow unlocks of healthy boards.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from firmware_bridge.status import BoardStatus, UnlockOutcome, UnlockResult
from locker_controller.cabinet import Cabinet, PollFailure
from locker_controller.config import ControllerConfig
from locker_controller.errors import CompartmentUnavailable
from locker_controller.outbox import EventLog
from locker_controller.store import Store
from xinbao.contract import EventType

log = logging.getLogger(__name__)

# After our unlock, a door seen opening within this window opened because of us.
EXPECT_OPEN_S = 10.0
# A silent board is asked again this often (each try costs a timeout on the shared bus).
DEAD_BOARD_RETRY_S = 5.0
# Garbled replies in a row before a board counts as unreachable (a timeout counts at once:
# firmware_bridge has already retried it).
PROTOCOL_FAILURES_UNREACHABLE = 3


class DoorListener(Protocol):
    def door_opened(self, number: int) -> None: ...
    def door_closed(self, number: int, occupied: bool | None) -> None: ...


@dataclass
class Door:
    number: int
    open: bool | None = None  # debounced; None until the first good reading
    occupied: bool | None = None
    open_candidate: bool | None = None
    open_count: int = 0
    occupied_candidate: bool | None = None
    occupied_count: int = 0
    opened_at: float | None = None
    left_open_reported: bool = False
    expect_open_until: float = 0.0
    jammed_at: float | None = None


@dataclass
class BoardState:
    reachable: bool = True
    failures: int = 0
    next_try: float = 0.0


class DoorWatcher:
    def __init__(
        self,
        config: ControllerConfig,
        cabinet: Cabinet,
        store: Store,
        events: EventLog,
    ) -> None:
        self._config = config
        self._cabinet = cabinet
        self._store = store
        self._events = events
        self.poll_interval_s = config.poll_interval_s
        self.left_open_after_s = config.door_left_open_after_s
        self.doors = {c.number: Door(c.number) for c in config.compartments}
        self.boards: dict[tuple[int, int], BoardState] = {
            (i, b.address): BoardState() for i, bus in enumerate(config.buses) for b in bus.boards
        }
        self.listener: DoorListener | None = None

    # --- service state ------------------------------------------------------------------

    def in_service(self, number: int) -> bool:
        wiring = self._cabinet.wiring.get(number)
        return wiring is not None and self.boards[(wiring.bus, wiring.board)].reachable

    def out_of_service(self) -> list[int]:
        return sorted(n for n in self.doors if not self.in_service(n))

    # --- opening ------------------------------------------------------------------------

    async def open_door(
        self, number: int, prepare: Callable[[], None] | None = None, **why: object
    ) -> UnlockResult:
        """Pulse one lock; records unlock_sent and what the board saw. ``why`` goes in data.

        The unlock frame is handed to the bus thread BEFORE ``prepare`` runs, so the SQLite
        commits that ``prepare`` makes (fsync) overlap the frame on the wire instead of
        delaying it: keypad-to-lock latency is what a person at the cabinet feels.
        """
        if not self.in_service(number):
            raise CompartmentUnavailable(number, "its lock board is not answering")
        door = self.doors[number]
        door.expect_open_until = time.monotonic() + EXPECT_OPEN_S
        pending = self._cabinet.start_unlock(number)
        if prepare is not None:
            prepare()
        result = await self._cabinet.finish_unlock(number, pending)
        outcome = result.outcome
        self._events.record(EventType.UNLOCK_SENT, number, outcome=outcome.value, **why)
        if outcome is UnlockOutcome.OPENED:
            door.jammed_at = None
            self._set_open(door, True, by="command")
        elif outcome is UnlockOutcome.JAMMED:
            door.jammed_at = time.monotonic()
            self._events.record(EventType.DOOR_JAMMED, number, **why)
        elif outcome is UnlockOutcome.NO_RESPONSE:
            raise CompartmentUnavailable(number, "the lock board did not confirm the unlock")
        return result

    def recently_jammed(self, number: int, window_s: float) -> bool:
        door = self.doors.get(number)
        return bool(door and door.jammed_at and time.monotonic() - door.jammed_at <= window_s)

    # --- polling ------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for bus in range(self._cabinet.bus_count):
                group.create_task(self._poll_bus(bus))

    async def _poll_bus(self, bus: int) -> None:
        while True:
            for address in self._cabinet.boards(bus):
                await self.poll_board(bus, address)
            self.check_left_open()
            await asyncio.sleep(self.poll_interval_s)

    async def poll_board(self, bus: int, address: int) -> None:
        state = self.boards[(bus, address)]
        now = time.monotonic()
        if not state.reachable and now < state.next_try:
            return
        try:
            status = await self._cabinet.status(bus, address)
        except PollFailure as failure:
            self._board_failed(bus, address, state, failure)
            return
        state.failures = 0
        if not state.reachable:
            state.reachable = True
            self._events.record(EventType.BOARD_RECOVERED, None, bus=bus, board=address)
        self.apply(bus, address, status)

    def _board_failed(self, bus: int, address: int, state: BoardState, failure: PollFailure):
        state.failures += 1
        state.next_try = time.monotonic() + DEAD_BOARD_RETRY_S
        if not state.reachable:
            return
        if failure.kind == "protocol" and state.failures < PROTOCOL_FAILURES_UNREACHABLE:
            log.warning("bus %s board %s: %s", bus, address, failure)
            return
        state.reachable = False
        numbers = [w.number for w in self._cabinet.compartments_on(bus, address)]
        self._events.record(
            EventType.BOARD_UNREACHABLE,
            None,
            bus=bus,
            board=address,
            reason=failure.kind,
            compartments=numbers,
        )

    def apply(self, bus: int, address: int, status: BoardStatus) -> None:
        for wiring in self._cabinet.compartments_on(bus, address):
            reading = status.channel(wiring.channel)
            if reading is None:
                continue
            door = self.doors[wiring.number]
            # Occupancy first: a close completes a drop-off by what the sensor sees.
            if reading.occupied is not None:
                self._debounce_occupancy(door, reading.occupied)
            self._debounce_door(door, not reading.locked)

    def _debounce_door(self, door: Door, is_open: bool) -> None:
        if door.open is None:  # first reading after start: a baseline, not an event
            door.open = is_open
            door.opened_at = time.monotonic() if is_open else None
            if not is_open and self.listener is not None:
                self.listener.door_closed(door.number, door.occupied)
            return
        if is_open == door.open:
            door.open_candidate, door.open_count = None, 0
            return
        if door.open_candidate != is_open:
            door.open_candidate, door.open_count = is_open, 0
        door.open_count += 1
        if door.open_count < self._config.debounce_polls:
            return
        door.open_candidate, door.open_count = None, 0
        if is_open:
            by_us = time.monotonic() < door.expect_open_until
            self._set_open(door, True, by="command" if by_us else "forced")
        else:
            self._set_open(door, False)

    def _set_open(self, door: Door, is_open: bool, by: str = "command") -> None:
        if door.open is is_open:
            return
        door.open = is_open
        if is_open:
            door.opened_at = time.monotonic()
            door.left_open_reported = False
            kind = EventType.DOOR_OPENED if by == "command" else EventType.DOOR_FORCED
            self._events.record(kind, door.number)
            if self.listener is not None:
                self.listener.door_opened(door.number)
            return
        open_for = time.monotonic() - door.opened_at if door.opened_at else None
        door.opened_at = None
        door.expect_open_until = 0.0
        # The close and what it completes (deposited, collected) commit together.
        with self._store.transaction():
            self._events.record(
                EventType.DOOR_CLOSED,
                door.number,
                open_s=round(open_for, 3) if open_for is not None else None,
            )
            if self.listener is not None:
                self.listener.door_closed(door.number, door.occupied)

    def _debounce_occupancy(self, door: Door, occupied: bool) -> None:
        if door.occupied is None:
            door.occupied = occupied
            return
        if occupied == door.occupied:
            door.occupied_candidate, door.occupied_count = None, 0
            return
        if door.occupied_candidate != occupied:
            door.occupied_candidate, door.occupied_count = occupied, 0
        door.occupied_count += 1
        if door.occupied_count < self._config.debounce_polls:
            return
        door.occupied_candidate, door.occupied_count = None, 0
        door.occupied = occupied
        kind = EventType.ITEM_DETECTED if occupied else EventType.ITEM_REMOVED
        self._events.record(kind, door.number)

    def check_left_open(self) -> None:
        now = time.monotonic()
        for door in self.doors.values():
            if (
                door.open
                and door.opened_at is not None
                and not door.left_open_reported
                and now - door.opened_at >= self.left_open_after_s
            ):
                door.left_open_reported = True
                self._events.record(
                    EventType.DOOR_LEFT_OPEN, door.number, open_s=round(now - door.opened_at, 1)
                )
