"""The shared allocation rule (``xinbao.allocation``) fed with the cloud's view of a locker.

The cloud's view: each compartment's state and holder, staff's out-of-service flag, and the
open alarms that say a board does not answer (``board_unreachable``, with the compartments
the locker named) or a door is jammed (``door_jammed``). Those alarms close when the board
answers again or the door opens, or when staff acknowledge them: until then the cloud
offers none of those compartments, exactly as the cabinet refuses to open them.
"""

from sqlalchemy import select
from sqlmodel import Session

from cloud_api.models.locker import Compartment, CompartmentState
from cloud_api.models.monitoring import Alarm, AlarmKind
from xinbao.allocation import Slot


def faults(session: Session, locker_id: str, compartments: list[Compartment]) -> dict[int, str]:
    """Compartment number -> ``board_unreachable``, ``jammed`` or ``mismatch``, from the
    open alarms."""
    found: dict[int, str] = {}
    open_alarms = session.scalars(
        select(Alarm).where(
            Alarm.locker_id == locker_id,
            Alarm.kind.in_(
                [
                    AlarmKind.board_unreachable.value,
                    AlarmKind.door_jammed.value,
                    AlarmKind.mismatch.value,
                ]
            ),
            Alarm.cleared_at.is_(None),
        )
    )
    for alarm in open_alarms:
        if alarm.kind == AlarmKind.door_jammed.value:
            if alarm.compartment is not None:
                found.setdefault(alarm.compartment, "jammed")
            continue
        if alarm.kind == AlarmKind.mismatch.value:
            # The cloud and the cabinet disagree about what is in it: not offered until
            # they agree again or staff have looked (never a door onto an unknown item).
            if alarm.compartment is not None and not (alarm.data or {}).get("corrected"):
                found.setdefault(alarm.compartment, "mismatch")
            continue
        data = alarm.data or {}
        named = data.get("compartments")
        if isinstance(named, list) and named:
            numbers = {n for n in named if isinstance(n, int)}
        else:  # an older locker: every compartment wired to that board address
            numbers = {c.number for c in compartments if c.board == data.get("board")}
        for number in numbers:
            found[number] = "board_unreachable"
    return found


def slots(session: Session, locker_id: str) -> list[Slot]:
    """Every compartment of the locker as the cloud sees it now."""
    compartments = list(
        session.scalars(
            select(Compartment)
            .where(Compartment.locker_id == locker_id)
            .order_by(Compartment.number)
        )
    )
    fault = faults(session, locker_id, compartments)
    return [
        Slot(
            number=c.number,
            size=c.size,
            board=c.board,
            holders=frozenset({c.handover_id} if c.handover_id is not None else ()),
            # A compartment that is not free without a holder is still taken (an item the
            # cloud cannot name): never offered.
            occupied=c.state == CompartmentState.occupied.value
            or (c.state != CompartmentState.free.value and c.handover_id is None)
            or fault.get(c.number) == "mismatch",
            in_service=not c.out_of_service,
            board_up=fault.get(c.number) != "board_unreachable",
            jammed=fault.get(c.number) == "jammed",
        )
        for c in compartments
    ]
