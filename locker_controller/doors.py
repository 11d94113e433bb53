"""Watching every door: board polling, debounce, derived door events, board health.

The board tells us lock feedback and (on some boards) infrared occupancy; everything else is
derived here. "Unlock sent" and "door seen open" are different facts (a lock can release
while the door stays shut), so they are different events. A door that opens without a recent
unlock of ours is ``door_forced``. A board that stops answering takes only its own
compartments out of service; it is then polled less often, because every poll of a silent
board costs a full timeout on the shared bus and would slow unlocks of healthy boards.

Each door's state is kept in the store with the event it causes, so the first readings after
a restart are compared with it and what happened meanwhile is reported with ``while_down``
(restart.py resolves purposes left over from before the start).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from firmware_bridge.status import BoardStatus, DoorReport, UnlockOutcome, UnlockResult
from locker_controller.cabinet import Cabinet, PollFailure
from locker_controller.config import ControllerConfig
from locker_controller.door_model import Door, DoorListener
from locker_controller.errors import CompartmentUnavailable
from locker_controller.operations import Purpose
from locker_controller.outbox import EventLog
from locker_controller.restart import StartupCheck
from locker_controller.store import DoorRecord, Store
from xinbao.contract import EventType

log = logging.getLogger(__name__)

# After our unlock, a door seen opening within this window opened because of us.
EXPECT_OPEN_S = 10.0
# A silent board is asked again this often (each try costs a timeout on the shared bus).
DEAD_BOARD_RETRY_S = 5.0
# Garbled replies in a row before a board counts as unreachable (a timeout counts at once:
# firmware_bridge has already retried it).
PROTOCOL_FAILURES_UNREACHABLE = 3


_BOARD_DOWN = "board_down:"


def _board_key(bus: int, address: int) -> str:
    return f"{_BOARD_DOWN}{bus}:{address}"


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
        listener: DoorListener,
    ) -> None:
        self._config = config
        self._cabinet = cabinet
        self._store = store
        self._events = events
        self.listener = listener
        self.poll_interval_s = config.poll_interval_s
        self.left_open_after_s = config.door_left_open_after_s
        self.reopen_window_s = config.reopen_window_s
        self._startup = StartupCheck(store, events, listener)
        known = store.door_records()
        self.doors = {c.number: Door(c.number) for c in config.compartments}
        for door in self.doors.values():
            door.known = known.get(door.number)
            if door.known is not None:
                door.changed_at = door.known.changed_at
        # A board this controller last reported unreachable stays so across a restart until
        # a poll answers: that poll's board_recovered is what clears the cloud's alarm (a
        # board mended while the controller was down would otherwise never be reported).
        down = store.metas(_BOARD_DOWN)
        self.boards: dict[tuple[int, int], BoardState] = {
            (i, b.address): BoardState(reachable=_board_key(i, b.address) not in down)
            for i, bus in enumerate(config.buses)
            for b in bus.boards
        }

    # --- service state ------------------------------------------------------------------

    def in_service(self, number: int) -> bool:
        wiring = self._cabinet.wiring.get(number)
        return wiring is not None and self.boards[(wiring.bus, wiring.board)].reachable

    def jammed(self, number: int) -> bool:
        """The door did not open when last asked and has not been seen open since: not
        offered for anything new until it opens (a reopen, or staff clearing it)."""
        door = self.doors.get(number)
        return bool(door and door.jammed_at is not None and not door.open)

    def out_of_service(self) -> list[int]:
        return sorted(n for n in self.doors if not self.in_service(n))

    # --- opening ------------------------------------------------------------------------

    async def open_door(
        self,
        number: int,
        purpose: Purpose,
        accept: Callable[[], None] | None = None,
        **why: object,
    ) -> UnlockResult:
        """Open one door for ``purpose``; records unlock_sent and what the board saw.

        The purpose and ``accept`` (which records code_accepted or staff_action) commit
        BEFORE the frame goes out: a crash after the pulse then still knows what the door
        was opened for, the code can no longer open a second door, and restore() reports
        the cut-short unlock. The commit costs one fsync on the keypad path (see
        bench/keypad_bench.py). ``why`` goes in the data of unlock_sent.
        """
        if not self.in_service(number):
            raise CompartmentUnavailable(number, "its lock board is not answering")
        door = self.doors[number]
        with self._store.transaction():
            self.listener.begin(number, purpose)
            if accept is not None:
                accept()
        door.expect_open_until = time.monotonic() + EXPECT_OPEN_S
        door.waiting_since = None
        try:
            result = await self._cabinet.unlock(number)
        except CompartmentUnavailable as err:
            # Refused by the board or the port failed: nothing opened, the purpose ends.
            with self._store.transaction():
                self._events.record(
                    EventType.UNLOCK_SENT, number, outcome="failed", error=err.why, **why
                )
                self.listener.cancel_if(number, purpose)
            raise
        outcome = result.outcome
        with self._store.transaction():
            self._events.record(EventType.UNLOCK_SENT, number, outcome=outcome.value, **why)
            self.listener.unlock_recorded(number)
            if outcome is UnlockOutcome.OPENED:
                door.jammed_at = None
                self._set_open(door, True, by="command")
            elif outcome is UnlockOutcome.ALREADY_OPEN:
                # Someone opened it before (forced, or left open): it is open for this
                # purpose all the same, and its close completes it.
                door.jammed_at = None
                if door.open:
                    self.listener.door_opened(number)
                else:
                    self._set_open(door, True, by="command")
            elif outcome is UnlockOutcome.JAMMED:
                door.jammed_at = door.waiting_since = time.monotonic()
                self._events.record(EventType.DOOR_JAMMED, number, **why)
            else:
                # No confirmation: the pulse may have fired all the same. A door seen open
                # while the purpose waits is attributed to it (see _debounce_door).
                door.waiting_since = time.monotonic()
        return result

    def recently_jammed(self, number: int, window_s: float) -> bool:
        door = self.doors.get(number)
        return bool(door and door.jammed_at and time.monotonic() - door.jammed_at <= window_s)

    # --- polling ------------------------------------------------------------------------

    async def run(self) -> None:
        self._startup.restore()
        async with asyncio.TaskGroup() as group:
            for bus in range(self._cabinet.bus_count):
                group.create_task(self._poll_bus(bus))

    async def _poll_bus(self, bus: int) -> None:
        while True:
            for address in self._cabinet.boards(bus):
                await self.poll_board(bus, address)
            for report in await self._cabinet.door_reports(bus):
                self.apply_report(bus, report)
            self.check_timers()
            await asyncio.sleep(self.poll_interval_s)

    def apply_report(self, bus: int, report: DoorReport) -> None:
        """A door change a board pushed of its own accord (8A firmware that reports them):
        the board settled it before sending, so it counts at once, without waiting for
        ``debounce_polls`` polls; the event says ``via: report``."""
        wiring = self._cabinet.wiring_at(bus, report.board, report.status.channel)
        if wiring is None:
            return  # a channel no compartment is wired to
        door = self.doors[wiring.number]
        board = self.boards.get((bus, report.board))
        if not door.settled or board is None or not board.reachable:
            return  # the polls set the baseline (and a silent board's report is stale)
        self._debounce_door(door, not report.status.locked, settled=True)

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
            with self._store.transaction():
                self._events.record(EventType.BOARD_RECOVERED, None, bus=bus, board=address)
                self._store.set_meta(_board_key(bus, address), "")
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
        with self._store.transaction():
            self._events.record(
                EventType.BOARD_UNREACHABLE,
                None,
                bus=bus,
                board=address,
                reason=failure.kind,
                compartments=numbers,
            )
            self._store.set_meta(_board_key(bus, address), "1")

    def apply(self, bus: int, address: int, status: BoardStatus) -> None:
        for wiring in self._cabinet.compartments_on(bus, address):
            reading = status.channel(wiring.channel)
            if reading is None:
                continue
            door = self.doors[wiring.number]
            door.readings += 1
            door.last_reading_at = time.monotonic()
            # Occupancy first: a close completes a drop-off by what the sensor sees.
            if reading.occupied is not None:
                self._debounce_occupancy(door, reading.occupied)
            self._debounce_door(door, not reading.locked)
            if (
                not door.settled
                and door.open is not None
                and door.readings >= self._config.debounce_polls
                and door.open_candidate is None
                and door.occupied_candidate is None
            ):
                self._startup.settle(door)

    def _save(self, door: Door) -> None:
        is_open = door.open if door.open is not None else (door.known and door.known.open)
        if is_open is None:
            return  # never seen: the door's first reading saves it
        self._store.save_door(door.number, DoorRecord(is_open, door.occupied, door.changed_at))

    def _debounce_door(self, door: Door, is_open: bool, *, settled: bool = False) -> None:
        believed = door.open if door.open is not None else (door.known and door.known.open)
        if door.open is None and door.known is None:
            # Never seen, not even before a restart: a baseline, not an event.
            door.open = is_open
            door.opened_at = time.monotonic() if is_open else None
            door.changed_at = time.time()
            self._save(door)
            return
        if is_open == believed:
            door.open_candidate, door.open_count = None, 0
            if door.open is None:  # as it was left: carry on from the stored state
                assert door.known is not None
                door.open = is_open
                if is_open:
                    since = max(0.0, time.time() - door.changed_at)
                    door.opened_at = time.monotonic() - since
            return
        if door.open_candidate != is_open:
            door.open_candidate, door.open_count = is_open, 0
        door.open_count += 1
        if door.open_count < self._config.debounce_polls and not settled:
            return
        door.open_candidate, door.open_count = None, 0
        while_down = door.open is None
        via = "report" if settled else None
        if is_open:
            by_us = (
                time.monotonic() < door.expect_open_until
                or door.waiting_since is not None
                or (while_down and self.listener.waiting(door.number) is not None)
            )
            by = "command" if by_us else "forced"
            self._set_open(door, True, by=by, while_down=while_down, via=via)
        else:
            self._set_open(door, False, while_down=while_down, via=via)

    def _set_open(
        self,
        door: Door,
        is_open: bool,
        by: str = "command",
        *,
        while_down: bool = False,
        via: str | None = None,
    ) -> None:
        if door.open is is_open:
            return
        extra = {"while_down": True} if while_down else {}
        if via is not None:
            extra["via"] = via
        if is_open:
            # The opening, the door state and the purpose marked opened commit together.
            with self._store.transaction():
                door.open = True
                door.waiting_since = None
                door.jammed_at = None
                door.opened_at = time.monotonic()
                door.changed_at = time.time()
                door.left_open_reported = False
                kind = EventType.DOOR_OPENED if by == "command" else EventType.DOOR_FORCED
                self._events.record(kind, door.number, **extra)
                self._save(door)
                self.listener.door_opened(door.number)
            return
        open_for = time.monotonic() - door.opened_at if door.opened_at and not while_down else None
        # The close, the door state and what it completes (deposited, collected) commit
        # together.
        with self._store.transaction():
            door.open = False
            door.opened_at = None
            door.changed_at = time.time()
            door.expect_open_until = 0.0
            self._events.record(
                EventType.DOOR_CLOSED,
                door.number,
                open_s=round(open_for, 3) if open_for is not None else None,
                **extra,
            )
            self._save(door)
            self.listener.door_closed(door.number, door.occupied)

    def _debounce_occupancy(self, door: Door, occupied: bool) -> None:
        known = door.known.occupied if door.known is not None else None
        believed = door.occupied if door.occupied is not None else known
        if believed is None:
            door.occupied = occupied  # baseline (saved with the door's baseline)
            return
        if occupied == believed:
            door.occupied_candidate, door.occupied_count = None, 0
            door.occupied = occupied
            return
        if door.occupied_candidate != occupied:
            door.occupied_candidate, door.occupied_count = occupied, 0
        door.occupied_count += 1
        if door.occupied_count < self._config.debounce_polls:
            return
        door.occupied_candidate, door.occupied_count = None, 0
        while_down = door.occupied is None
        door.occupied = occupied
        if while_down:
            door.item_moved_while_down = occupied
        kind = EventType.ITEM_DETECTED if occupied else EventType.ITEM_REMOVED
        with self._store.transaction():
            self._events.record(kind, door.number, **({"while_down": True} if while_down else {}))
            self._save(door)

    def check_timers(self) -> None:
        """door_left_open after N seconds; purposes whose door stayed shut are dropped.

        A purpose waits ``reopen_window_s`` after a jam or an unconfirmed unlock (the
        kiosk offers "reopen" meanwhile), and only ends on a reading taken after that
        window: while its board is silent nobody knows whether the door opened.
        """
        now = time.monotonic()
        for door in self.doors.values():
            since = door.waiting_since
            if (
                since is not None
                and door.open is False
                and door.open_candidate is None
                and door.last_reading_at - since >= self.reopen_window_s
            ):
                door.waiting_since = None
                self.listener.abandon(door.number, "its door stayed shut")
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
