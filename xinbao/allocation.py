"""Which compartment may be offered for a handover: one rule, applied by the cloud when it
reserves one and by the cabinet when it opens a door for a drop-off or a load.

A compartment is offered only when it holds nothing, is in service, is held by no other live
handover (nor by a door open for another purpose), and its board answers and its door is not
jammed. Each side describes the compartments as it sees them (``Slot``); this module decides,
so the two cannot drift apart. When the cabinet cannot use the compartment the cloud planned,
``choose`` says which one it used instead and why (``Unusable``), and that reason travels in
the ``deposited`` event (docs/mqtt.md) so the cloud follows the truth and tells staff.

Pure functions, no I/O: the cloud builds slots from its tables and alarms, the controller
from its SQLite store, its door purposes and what its boards report.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Unusable(StrEnum):
    """Why a compartment is not offered, most telling first (``why_not`` checks in order)."""

    UNKNOWN = "unknown"  # no such compartment
    BOARD_DOWN = "board_unreachable"  # its lock board does not answer
    JAMMED = "jammed"  # its door did not open when last asked; until it opens or staff clear
    OUT_OF_SERVICE = "out_of_service"  # staff took it out of service
    OCCUPIED = "occupied"  # an item is inside (believed, or seen by the sensor)
    HELD = "held"  # reserved for, or holding the item of, another live handover
    BUSY = "busy"  # its door is open (or opening) for another purpose
    WRONG_SIZE = "wrong_size"


@dataclass(frozen=True)
class Slot:
    """One compartment as one side sees it now."""

    number: int
    size: str
    board: int | None = None
    holders: frozenset[int] = field(default_factory=frozenset)  # live handovers holding it
    occupied: bool = False  # an item is inside, as this side believes
    sensed: bool | None = None  # the occupancy sensor's reading; None: the board has none
    in_service: bool = True
    board_up: bool = True
    jammed: bool = False
    busy: bool = False  # a door purpose of someone else (another handover, maintenance)


@dataclass(frozen=True)
class Choice:
    """The compartment to open (None: none may be offered), the one planned (the cloud's
    reservation, if any) and, when they differ, why the planned one was not used."""

    number: int | None
    planned: int | None = None
    reason: Unusable | None = None

    @property
    def deviated(self) -> bool:
        return self.planned is not None and self.number != self.planned


def why_not(slot: Slot, handover_id: int | None = None, size: str | None = None) -> Unusable | None:
    """None if ``slot`` may be offered for ``handover_id`` (of ``size``), else the reason."""
    if not slot.board_up:
        return Unusable.BOARD_DOWN
    if slot.jammed:
        return Unusable.JAMMED
    if not slot.in_service:
        return Unusable.OUT_OF_SERVICE
    # Never a door onto someone's item, whatever anyone believes about who holds it.
    if slot.occupied or slot.sensed:
        return Unusable.OCCUPIED
    if slot.holders - {handover_id}:
        return Unusable.HELD
    if slot.busy:
        return Unusable.BUSY
    if size is not None and slot.size != size:
        return Unusable.WRONG_SIZE
    return None


def usable(
    slots: Iterable[Slot], size: str | None, handover_id: int | None = None
) -> list[int]:
    """Every compartment that may be offered, in the order they are offered (by number)."""
    return sorted(s.number for s in slots if why_not(s, handover_id, size) is None)


def choose(
    slots: Iterable[Slot],
    size: str | None,
    handover_id: int | None = None,
    planned: int | None = None,
) -> Choice:
    """``planned`` if it may be offered, else the lowest-numbered compartment of ``size``
    that may (any size if None; a planned compartment fixes the size to its own)."""
    slots = list(slots)
    by_number = {s.number: s for s in slots}
    reason = None
    if planned is not None:
        slot = by_number.get(planned)
        if slot is None:
            reason = Unusable.UNKNOWN
        else:
            size = size or slot.size
            reason = why_not(slot, handover_id, size)
            if reason is None:
                return Choice(planned, planned, None)
    found = usable(slots, size, handover_id)
    return Choice(found[0] if found else None, planned, reason)


# --- saying why -------------------------------------------------------------------------


def numbers_text(numbers: Iterable[int]) -> str:
    """``5-8``, ``3, 5-6``: compartment numbers as staff read them."""
    ordered = sorted(set(numbers))
    runs: list[list[int]] = []
    for n in ordered:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def _compartments(numbers: Sequence[int]) -> str:
    word = "compartment" if len(set(numbers)) == 1 else "compartments"
    return f"{word} {numbers_text(numbers)}"


def unavailable(slots: Iterable[Slot]) -> list[str]:
    """What staff must know about compartments not offered for a fault, e.g. ``board 2 does
    not answer: compartments 5-8 unavailable``; one line per board or door (faults only:
    a compartment in use is not news)."""
    slots = list(slots)
    lines = []
    down: dict[int | None, list[int]] = {}
    for s in slots:
        if not s.board_up:
            down.setdefault(s.board, []).append(s.number)
    for board, numbers in sorted(down.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
        name = f"board {board}" if board is not None else "a lock board"
        lines.append(f"{name} does not answer: {_compartments(numbers)} unavailable")
    jammed = [s.number for s in slots if s.board_up and s.jammed]
    if jammed:
        lines.append(f"{_compartments(jammed)} jammed: unavailable until staff clear it")
    stopped = [s.number for s in slots if s.board_up and not s.jammed and not s.in_service]
    if stopped:
        lines.append(f"{_compartments(stopped)} out of service")
    return lines


def staff_reason(slots: Iterable[Slot], size: str | None) -> str:
    """Why no compartment of ``size`` could be offered, for staff (the dashboard, an API
    problem's detail, the cabinet's staff panel)."""
    slots = list(slots)
    what = f"no free compartment of size {size}" if size else "no free compartment"
    faults = unavailable(s for s in slots if size is None or s.size == size)
    return f"{what}: {'; '.join(faults)}" if faults else what


def deviation_text(choice: Choice) -> str:
    """For staff: where the item went instead of the planned compartment, and why."""
    why = {
        Unusable.UNKNOWN: "the cabinet has no such compartment",
        Unusable.BOARD_DOWN: "its lock board does not answer",
        Unusable.JAMMED: "its door is jammed",
        Unusable.OUT_OF_SERVICE: "it is out of service",
        Unusable.OCCUPIED: "something is inside it",
        Unusable.HELD: "it holds another handover",
        Unusable.BUSY: "its door is open for something else",
        Unusable.WRONG_SIZE: "it is of another size",
    }.get(choice.reason, "the cabinet chose another")  # type: ignore[arg-type]
    return f"compartment {choice.number} used instead of {choice.planned}: {why}"


# What an applicant is told when no compartment can be offered: their own words, no board
# numbers (zh, en). A fault is the service's problem, not theirs; "full" is a plain fact.
APPLICANT_MESSAGES: dict[str, tuple[str, str]] = {
    "no_free_compartment": (
        "暂无空闲箱格，请联系工作人员",
        "No free compartment. Please contact staff.",
    ),
    "compartments_unavailable": (
        "部分箱格正在维护，暂时无法使用，请联系工作人员或稍后再试",
        "Some compartments are under repair and cannot be used now. "
        "Please contact staff or try again later.",
    ),
}


def applicant_reason(slots: Iterable[Slot], size: str | None) -> str:
    """The applicant's message key for "nothing offered": a fault, or simply full."""
    faulty = any(
        (not s.board_up or s.jammed or not s.in_service) and (size is None or s.size == size)
        for s in slots
    )
    return "compartments_unavailable" if faulty else "no_free_compartment"
