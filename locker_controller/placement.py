"""Where a drop-off or a load goes at this cabinet: the shared allocation rule
(``xinbao.allocation``) fed with what the cabinet knows now.

The cabinet's view: what its store believes each compartment holds, which live handover
holds which compartment, which door is open for which purpose, what the boards' occupancy
sensors see, which boards answer and which doors jammed. The cloud applies the same rule to
its own view when it reserves; when this view forbids the compartment the cloud planned, the
item goes to the one the rule picks instead and the reason travels with the deposit.
"""

from __future__ import annotations

from locker_controller.doors import DoorWatcher
from locker_controller.operations import Operations
from locker_controller.store import Handover, Store
from xinbao.allocation import Choice, Slot, applicant_reason, choose, staff_reason


class Placement:
    def __init__(self, store: Store, operations: Operations, doors: DoorWatcher) -> None:
        self._store = store
        self._operations = operations
        self._doors = doors

    def slots(self) -> list[Slot]:
        holders: dict[int, set[int]] = {}
        for h in self._store.live_handovers():
            if h.compartment is not None:
                holders.setdefault(h.compartment, set()).add(h.handover_id)
        busy: set[int] = set()
        for number, purpose in self._operations.purposes().items():
            if purpose.handover_id is None:
                busy.add(number)  # staff work or a remote open: nobody else's door now
            else:
                holders.setdefault(number, set()).add(purpose.handover_id)
        found = []
        for c in self._store.compartments():
            door = self._doors.doors.get(c.number)
            found.append(
                Slot(
                    number=c.number,
                    size=c.size,
                    board=c.board,
                    holders=frozenset(holders.get(c.number, ())),
                    occupied=c.occupied,
                    sensed=door.occupied if door is not None else None,
                    board_up=self._doors.in_service(c.number),
                    jammed=self._doors.jammed(c.number),
                    busy=c.number in busy,
                )
            )
        return found

    def choose(self, handover: Handover) -> Choice:
        """The compartment the cloud reserved if the rule allows it here, else the rule's
        pick of the handover's size (None: nothing may be offered)."""
        return choose(self.slots(), handover.size, handover.handover_id, handover.compartment)

    def refusal(self, handover: Handover) -> tuple[str, str]:
        """(applicant's message key, staff's explanation) when nothing may be offered."""
        slots = self.slots()
        size = handover.size
        if size is None and handover.compartment is not None:
            planned = self._store.compartment(handover.compartment)
            size = planned.size if planned else None
        return applicant_reason(slots, size), staff_reason(slots, size)
