"""Codes typed at the cabinet (or scanned): checked locally, then the right door opens.

Offline first: a code is matched with ``xinbao.codes.match_counter`` against the counters of
the handovers this cabinet holds, so pickups and pre-synced drop-offs need no network. A code
the cabinet does not know is refused; asking the cloud for unknown codes is not done (a code
the cloud issued for this locker always reaches it first through sync_reservations).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import NoReturn

from firmware_bridge.status import UnlockOutcome
from locker_controller.code_book import CodeBook
from locker_controller.config import ControllerConfig
from locker_controller.doors import DoorWatcher
from locker_controller.errors import CodeRefused, CompartmentUnavailable
from locker_controller.lockout import Lockout
from locker_controller.operations import DROPOFF, PICKUP, Operations, Purpose
from locker_controller.outbox import EventLog
from locker_controller.placement import Placement
from locker_controller.store import Handover, Store
from xinbao.codes import MAX_DIGITS, MIN_DIGITS, match_counter
from xinbao.contract import EventType

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DoorOpened:
    compartment: int
    outcome: UnlockOutcome


class Keypad:
    def __init__(
        self,
        config: ControllerConfig,
        store: Store,
        events: EventLog,
        doors: DoorWatcher,
        operations: Operations,
        lockout: Lockout,
    ) -> None:
        self._key = config.locker_key
        self.codes = CodeBook(config.locker_key)
        self._reopen_window_s = config.reopen_window_s
        self._store = store
        self._events = events
        self._doors = doors
        self._operations = operations
        self._lockout = lockout
        self._placement = Placement(store, operations, doors)

    def _find(self, code: str) -> Handover | None:
        # Live handovers, from the code book (digests kept in memory): the keypad path. A
        # cabinet holds ~100 live codes (DESIGN.md §6) but collects used ones until the next
        # full sync; those are checked (HOTP by HOTP) only for a code that opens nothing, to
        # say "used" rather than "wrong".
        live = self._store.live_handovers()
        found = self.codes.match(code, live)
        if found is None:
            found = self._match(code, self._store.finished_handovers())
        return found

    def warm(self) -> None:
        """Digest the live codes now (at start and after a sync), not on the keypad path."""
        self.codes.warm(self._store.live_handovers())

    def _match(self, code: str, candidates: list[Handover]) -> Handover | None:
        handovers = {h.counter: h for h in candidates if h.digits == len(code)}
        counter = match_counter(self._key, code, handovers, digits=len(code))
        return handovers.get(counter) if counter is not None else None

    async def submit(self, code: str) -> DoorOpened:
        code = code.strip() if isinstance(code, str) else ""
        if not (MIN_DIGITS <= len(code) <= MAX_DIGITS and code.isascii() and code.isdigit()):
            raise CodeRefused("malformed", "a code is 6 to 10 digits")
        self._lockout.check()
        handover = self._find(code)
        if handover is None:
            raise self._lockout.failed("wrong")
        now = datetime.now(UTC)
        if handover.state not in ("reserved", "deposited", "overdue"):
            raise self._lockout.failed("used", handover_id=handover.handover_id)
        if handover.kind == PICKUP and handover.state == "reserved":
            raise self._lockout.failed("not_ready", handover_id=handover.handover_id)
        # Overdue pickups keep working until staff recover the item (DESIGN.md §3).
        if handover.state == "reserved" and handover.expired(now):
            raise self._lockout.failed("expired", handover_id=handover.handover_id)
        if handover.kind == DROPOFF and handover.state != "reserved":
            raise self._lockout.failed("used", handover_id=handover.handover_id)
        number, purpose = self._compartment_for(handover)

        def accept() -> None:
            self._lockout.succeeded()
            self._events.record(
                EventType.CODE_ACCEPTED,
                number,
                handover_id=handover.handover_id,
                kind=handover.kind,
                **_placed(purpose),
            )

        try:
            result = await self._doors.open_door(
                number, purpose, accept, handover_id=handover.handover_id
            )
        except CompartmentUnavailable:
            raise CodeRefused("out_of_service", f"compartment {number}") from None
        return DoorOpened(number, result.outcome)

    def _compartment_for(self, handover: Handover) -> tuple[int, Purpose]:
        purpose = Purpose(kind=handover.kind, handover_id=handover.handover_id)
        held = self._operations.held_for(handover.handover_id)
        if held is not None:
            # Typed again before the door closed: the same door, never a second one. A door
            # still shut is a new attempt at the same errand: it starts now, so the start-up
            # check (which drops errands begun before a restart whose door stayed shut) and
            # a late cancel of the earlier attempt both leave it alone.
            current = self._operations.get(held)
            if current is None:
                return held, purpose
            if current.opened:
                return held, current
            return held, replace(current, pulsed=False, began_at=time.time())
        if handover.kind == PICKUP:
            # The licence is where the cabinet put it: that door or none.
            number = handover.compartment
            if number is None or not self._doors.in_service(number):
                self._refused("out_of_service", number, handover)
            return number, purpose
        # A drop-off: the compartment the cloud reserved when the shared rule allows it
        # here, else the rule's own pick (reported with the deposit).
        choice = self._placement.choose(handover)
        if choice.number is None:
            key, why = self._placement.refusal(handover)
            self._refused(key, handover.compartment, handover, detail=why)
        if choice.deviated:
            purpose.planned, purpose.deviation = choice.planned, choice.reason
        return choice.number, purpose

    def _refused(
        self, reason: str, number: int | None, handover: Handover, detail: str | None = None
    ) -> NoReturn:
        extra = {"detail": detail} if detail else {}
        self._events.record(
            EventType.CODE_REFUSED,
            number,
            reason=reason,
            handover_id=handover.handover_id,
            **extra,
        )
        raise CodeRefused(reason, detail or f"compartment {number}")

    async def reopen(self, number: int) -> DoorOpened:
        """Open again a door that jammed shortly before, for the same purpose."""
        purpose = self._operations.waiting(number)
        if purpose is None or not self._doors.recently_jammed(number, self._reopen_window_s):
            raise CodeRefused("no_reopen", f"compartment {number} has nothing to reopen")
        again = replace(purpose, pulsed=False, began_at=time.time())
        try:
            result = await self._doors.open_door(
                number, again, handover_id=purpose.handover_id, reopen=True
            )
        except CompartmentUnavailable:
            raise CodeRefused("out_of_service", f"compartment {number}") from None
        return DoorOpened(number, result.outcome)


def _placed(purpose: Purpose) -> dict[str, object]:
    """Event data naming the cloud's compartment when the door opened is another one."""
    if purpose.planned is None:
        return {}
    return {"planned": purpose.planned, "deviation": purpose.deviation}
