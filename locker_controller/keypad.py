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
from locker_controller.metrics import ControllerMetrics
from locker_controller.operations import DROPOFF, PICKUP, Operations, Purpose
from locker_controller.outbox import EventLog
from locker_controller.placement import Placement
from locker_controller.store import Handover, Store
from xinbao.codes import MAX_DIGITS, MIN_DIGITS, match_counter
from xinbao.contract import EventType
from xinbao.lockout import mobile_matches, well_formed_mobile_digits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DoorOpened:
    compartment: int
    outcome: UnlockOutcome
    handover_id: int | None = None
    frame_sent_at: float | None = None  # time.monotonic() when the unlock frame went out


class Keypad:
    def __init__(
        self,
        config: ControllerConfig,
        store: Store,
        events: EventLog,
        doors: DoorWatcher,
        operations: Operations,
        lockout: Lockout,
        metrics: ControllerMetrics | None = None,
    ) -> None:
        self._metrics = metrics
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

    async def submit(self, code: str, mobile: str | None = None) -> DoorOpened:
        """Open the door of a typed code (timed for the metrics: to the unlock frame on the
        wire, and to the answer)."""
        started = time.monotonic()
        try:
            opened = await self._submit(code, mobile)
        except CodeRefused:
            if self._metrics is not None:
                self._metrics.keypad(started, "refused")
            raise
        if self._metrics is not None:
            self._metrics.keypad(started, "opened", opened.frame_sent_at)
        return opened

    async def _submit(self, code: str, mobile: str | None) -> DoorOpened:
        """Open the door of a typed code. During a lockout guesses are not checked: a code
        opens only together with the last 4 digits of the mobile it was sent to (``mobile``),
        which a guesser lacks and the applicant has (xinbao/lockout.py)."""
        code = code.strip() if isinstance(code, str) else ""
        if not (MIN_DIGITS <= len(code) <= MAX_DIGITS and code.isascii() and code.isdigit()):
            raise CodeRefused("malformed", "a code is 6 to 10 digits")
        if mobile is not None and not well_formed_mobile_digits(mobile):
            raise CodeRefused("malformed_mobile", "the last 4 digits of the mobile")
        second_factor = False
        if self._lockout.remaining() > 0:
            if mobile is None:
                raise self._lockout.refused()
            handover = self.codes.match(code, self._store.live_handovers())
            if (
                handover is None
                or not mobile_matches(
                    self._key, handover.handover_id, mobile, handover.mobile_digest
                )
                or self._unusable(handover) is not None
            ):
                # One answer whichever part was wrong: nothing to learn from it.
                raise self._lockout.refused(second_factor=True)
            second_factor = True
        else:
            handover = self._find(code)
            if handover is None:
                raise self._lockout.failed("wrong")
            if (why := self._unusable(handover)) is not None:
                raise self._lockout.failed(why, handover_id=handover.handover_id)
        number, purpose = self._compartment_for(handover)

        def accept() -> None:
            # An accepted code resets no lockout counter: failures decay by time only.
            self._events.record(
                EventType.CODE_ACCEPTED,
                number,
                handover_id=handover.handover_id,
                kind=handover.kind,
                **_placed(purpose),
                **({"second_factor": "mobile"} if second_factor else {}),
            )

        try:
            result = await self._doors.open_door(
                number, purpose, accept, handover_id=handover.handover_id
            )
        except CompartmentUnavailable:
            raise CodeRefused("out_of_service", f"compartment {number}") from None
        return DoorOpened(number, result.outcome, handover.handover_id, result.frame_sent_at)

    @staticmethod
    def _unusable(handover: Handover) -> str | None:
        """Why a matched code opens nothing now (None: it opens)."""
        if handover.state not in ("reserved", "deposited", "overdue"):
            return "used"
        if handover.kind == PICKUP and handover.state == "reserved":
            return "not_ready"
        # Overdue pickups keep working until staff recover the item (DESIGN.md §3).
        if handover.state == "reserved" and handover.expired(datetime.now(UTC)):
            return "expired"
        if handover.kind == DROPOFF and handover.state != "reserved":
            return "used"
        return None

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

    def reopenable(self, number: int) -> Purpose | None:
        """The errand a door that jammed shortly before still waits for, if any."""
        purpose = self._operations.waiting(number)
        if purpose is None or not self._doors.recently_jammed(number, self._reopen_window_s):
            return None
        return purpose

    async def reopen(
        self, number: int, handover_id: int | None = None, staff_no: str | None = None
    ) -> DoorOpened:
        """Open again a door that jammed shortly before, for the same purpose. The kiosk
        asks only for the session that typed the code (``handover_id``, from its reopen
        ticket) or for staff (``staff_no``)."""
        purpose = self.reopenable(number)
        if purpose is None or (staff_no is None and purpose.handover_id != handover_id):
            raise CodeRefused("no_reopen", f"compartment {number} has nothing to reopen")
        again = replace(purpose, pulsed=False, began_at=time.time())
        by = {"staff_no": staff_no} if staff_no else {}
        try:
            result = await self._doors.open_door(
                number, again, handover_id=purpose.handover_id, reopen=True, **by
            )
        except CompartmentUnavailable:
            raise CodeRefused("out_of_service", f"compartment {number}") from None
        return DoorOpened(number, result.outcome)


def _placed(purpose: Purpose) -> dict[str, object]:
    """Event data naming the cloud's compartment when the door opened is another one."""
    if purpose.planned is None:
        return {}
    return {"planned": purpose.planned, "deviation": purpose.deviation}
