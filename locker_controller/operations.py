"""What a door opening is for, kept until the door closes again, and what the close completes.

A code or a staff action opens a door for a purpose (deposit a drop-off, collect a pickup,
load a licence, ...). The purpose is stored in SQLite before the door opens, so a controller
restarted while the door stands open still turns the close into ``deposited`` or
``collected``; the close and that business event commit in one transaction (doors.py).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field

from locker_controller.errors import CompartmentUnavailable
from locker_controller.outbox import EventLog
from locker_controller.store import Store
from xinbao.contract import EventType

log = logging.getLogger(__name__)

# kinds of purpose
DROPOFF = "dropoff"  # applicant deposits documents with a drop-off code
PICKUP = "pickup"  # applicant collects a licence with a pickup code
STAFF_LOAD = "load"  # staff put a licence in for a pickup handover
STAFF_COLLECT = "collect"  # staff take dropped-off documents out
STAFF_RECOVER = "recover"  # staff take back an item never collected
MAINTENANCE = "maintenance"  # staff or the cloud open a door; nothing to complete


@dataclass
class Purpose:
    kind: str
    handover_id: int | None = None
    staff_no: str | None = None
    opened: bool = False
    # unlock_sent is in the outbox: a purpose without it at start-up was cut short by a crash
    pulsed: bool = False
    began_at: float = field(default_factory=time.time)
    # The compartment the cloud reserved, when this one is another, and why (the shared
    # allocation rule's reason word): the deposit reports both so the cloud follows.
    planned: int | None = None
    deviation: str | None = None

    def same_owner(self, other: Purpose) -> bool:
        """The same errand (a reopen renews its purpose; nothing else may replace it)."""
        return (self.kind, self.handover_id) == (other.kind, other.handover_id)

    def expected_item(self) -> bool | None:
        """What the occupancy sensor should see after the door closed: True an item went
        in, False it came out, None nothing to tell (maintenance)."""
        if self.kind in (DROPOFF, STAFF_LOAD):
            return True
        if self.kind in (PICKUP, STAFF_COLLECT, STAFF_RECOVER):
            return False
        return None


_PURPOSE = "purpose:"  # meta key prefix: the purpose of each door, by compartment number


def _purpose(raw: str) -> Purpose:
    return Purpose(**json.loads(raw))


class Operations:
    def __init__(self, store: Store, events: EventLog) -> None:
        self._store = store
        self._events = events

    def _key(self, number: int) -> str:
        return f"{_PURPOSE}{number}"

    def get(self, number: int) -> Purpose | None:
        raw = self._store.get_meta(self._key(number))
        return _purpose(raw) if raw else None

    def waiting(self, number: int) -> Purpose | None:
        """The purpose whose door has not been seen open yet, if any."""
        purpose = self.get(number)
        return purpose if purpose is not None and not purpose.opened else None

    def begin(self, number: int, purpose: Purpose) -> None:
        """Hold the door for ``purpose``. A door held for another errand (a load whose door
        still stands open, a drop-off waiting for its close) is never taken over: its close
        must still complete what it was opened for."""
        current = self.get(number)
        if current is not None and not current.same_owner(purpose):
            who = f"{current.kind} of handover {current.handover_id}"
            raise CompartmentUnavailable(number, f"its door is held for the {who}")
        self._put(number, purpose)

    def _put(self, number: int, purpose: Purpose) -> None:
        self._store.set_meta(self._key(number), json.dumps(asdict(purpose)))

    def cancel(self, number: int) -> None:
        self._store.set_meta(self._key(number), "")

    def cancel_if(self, number: int, purpose: Purpose) -> None:
        """Cancel ``purpose`` if it is still the one on this door (not a newer one)."""
        current = self.get(number)
        if current is not None and (current.kind, current.handover_id, current.began_at) == (
            purpose.kind,
            purpose.handover_id,
            purpose.began_at,
        ):
            self.cancel(number)

    def unlock_recorded(self, number: int) -> None:
        purpose = self.get(number)
        if purpose is not None and not purpose.pulsed:
            purpose.pulsed = True
            self._put(number, purpose)

    def purposes(self) -> dict[int, Purpose]:
        """Every door's purpose, in one query (the keypad path asks for them)."""
        found = {}
        for key, raw in self._store.metas(_PURPOSE).items():
            number = key.removeprefix(_PURPOSE)
            if number.isdigit():
                found[int(number)] = _purpose(raw)
        return found

    def held_for(self, handover_id: int) -> int | None:
        """The compartment already opened (or being opened) for this handover, if any."""
        for number, purpose in sorted(self.purposes().items()):
            if purpose.handover_id == handover_id:
                return number
        return None

    def busy(self) -> list[int]:
        """Compartments opened (or being opened) for a purpose that is not complete yet."""
        return sorted(self.purposes())

    def unpulsed(self) -> list[int]:
        """Doors whose purpose was committed but whose unlock_sent never was (a crash)."""
        return sorted(n for n, p in self.purposes().items() if not p.pulsed)

    def abandon(self, number: int, why: str, purpose: Purpose | None = None) -> None:
        """The door never opened for its purpose (``purpose``, when the caller judged that
        one: a newer attempt begun meanwhile is left alone): free the compartment; the code,
        never used, stays valid (a pickup or drop-off is only done when the door closes)."""
        current = self.waiting(number)
        if current is None or (purpose is not None and current.began_at != purpose.began_at):
            return
        purpose = current
        log.warning("compartment %s: %s never opened (%s); purpose dropped", number, purpose, why)
        self.cancel(number)

    # --- DoorListener -------------------------------------------------------------------

    def door_opened(self, number: int) -> None:
        purpose = self.get(number)
        if purpose is not None and not purpose.opened:
            purpose.opened = True
            self._put(number, purpose)

    def door_closed(self, number: int, occupied: bool | None) -> None:
        purpose = self.get(number)
        if purpose is None or not purpose.opened:
            return
        with self._store.transaction():
            self._complete(number, purpose, occupied)
            self.cancel(number)

    def _complete(self, number: int, purpose: Purpose, occupied: bool | None) -> None:
        store, record = self._store, self._events.record
        hid, who = purpose.handover_id, purpose.staff_no or "applicant"
        if purpose.kind in (DROPOFF, STAFF_LOAD):
            if occupied is False:
                # The board has an infrared sensor and saw nothing go in: no deposit, the
                # reservation (and its code) stays usable.
                if purpose.kind == STAFF_LOAD:
                    record(
                        EventType.STAFF_ACTION, number, action="load_empty", handover_id=hid, by=who
                    )
                return
            if hid is not None:
                store.set_handover_state(hid, "deposited", compartment=number)
            store.set_occupied(number, True)
            placed = {}
            if purpose.planned is not None and purpose.planned != number:
                placed = {"planned": purpose.planned, "deviation": purpose.deviation}
            record(EventType.DEPOSITED, number, handover_id=hid, by=who, **placed)
            return
        if purpose.kind in (PICKUP, STAFF_COLLECT, STAFF_RECOVER) and occupied is True:
            # The sensor still sees an item after the close: nothing came out (or not all).
            # The compartment stays occupied, the handover and its code stay as they were,
            # and the cloud hears of it, so nothing is ever loaded on top.
            store.set_occupied(number, True)
            record(
                EventType.ITEM_DETECTED,
                number,
                reason="item_still_inside",
                purpose=purpose.kind,
                handover_id=hid,
                by=who,
            )
            return
        if purpose.kind in (PICKUP, STAFF_COLLECT):
            if hid is not None:
                store.set_handover_state(hid, "collected")
            store.set_occupied(number, False)
            record(EventType.COLLECTED, number, handover_id=hid, by=who, item_left=occupied)
        elif purpose.kind == STAFF_RECOVER:
            if hid is not None:
                store.set_handover_state(hid, "recovered")
            store.set_occupied(number, False)
            record(EventType.STAFF_ACTION, number, action="recovered", handover_id=hid, by=who)
