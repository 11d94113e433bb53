"""What one locker event does to the cloud's state: alarms, audit lines, handovers.

Business events go through the same service functions as the HTTP locker endpoints, so a
drop-off reported over MQTT moves exactly as one reported over HTTP would.
"""

import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlmodel import Session

from cloud_api.models.handover import Handover, HandoverKind
from cloud_api.models.locker import Compartment, CompartmentState
from cloud_api.models.monitoring import AlarmKind
from cloud_api.services import alarms, audit, handovers
from cloud_api.services.handovers import HandoverPolicy
from xinbao.contract import EventType, LockerEvent

log = logging.getLogger(__name__)
# A drop-off waiting for staff is announced here (the API's log, the demo's console) and on
# the dashboard (cloud_api.web.notices lists the drop-offs that wait).
notices = logging.getLogger("xinbao.notices")

# Facts worth a line in the audit trail (电子监察) as they are.
AUDITED = {
    EventType.CODE_REFUSED,
    EventType.LOCKOUT,
    EventType.COMMAND_REJECTED,
    EventType.STAFF_LOGIN,
    EventType.DOOR_FORCED,
}
RAISES = {
    EventType.DOOR_LEFT_OPEN: AlarmKind.door_left_open,
    EventType.DOOR_FORCED: AlarmKind.door_forced,
    EventType.DOOR_JAMMED: AlarmKind.door_jammed,
    EventType.BOARD_UNREACHABLE: AlarmKind.board_unreachable,
}
CLEARS = {
    EventType.DOOR_CLOSED: AlarmKind.door_left_open,
    EventType.DOOR_OPENED: AlarmKind.door_jammed,
    EventType.BOARD_RECOVERED: AlarmKind.board_unreachable,
}


class Refused(Exception):
    """The event names something that is not this locker's: stored, never applied."""


def apply_event(
    session: Session, policy: HandoverPolicy, locker_id: str, event: LockerEvent, at: datetime
) -> bool:
    """Apply one event inside the open transaction; True if it changed more than the log.

    The handover services commit themselves; everything else is committed by the caller.
    """
    kind = event.type
    actor = f"locker:{locker_id}"
    place = {"compartment": event.compartment, "seq": event.seq, "data": event.data}
    if kind in RAISES:
        alarms.raise_alarm(session, locker_id, RAISES[kind], at, **place)
    if kind in CLEARS:
        alarms.clear_alarms(session, locker_id, CLEARS[kind], at, **place)
    if kind in AUDITED:
        audit.append(
            session,
            actor,
            f"locker.{kind.value}",
            actor,
            {"compartment": event.compartment, "seq": event.seq, **event.data},
        )
    if kind is EventType.DEPOSITED:
        handover = _handover(session, locker_id, event)
        if handover is None:
            return kind in AUDITED
        if handover.kind == HandoverKind.pickup and event.compartment is not None:
            _follow_compartment(session, handover, event.compartment)
        handovers.report_deposited(session, policy, handover, _by(event, actor), at)
        if handover.kind == HandoverKind.dropoff:
            _tell_staff(locker_id, handover, event)
        return True
    if kind is EventType.COLLECTED:
        handover = _handover(session, locker_id, event)
        if handover is None:
            return False
        if handover.kind == HandoverKind.pickup:
            handovers.report_collected(session, policy, handover, _by(event, actor), at)
        else:
            handovers.staff_collect(session, handover, _by(event, actor), at)
        return True
    if kind is EventType.STAFF_ACTION and event.data.get("action") == "recovered":
        handover = _handover(session, locker_id, event)
        if handover is None:
            return False
        handovers.staff_recover(session, handover, _by(event, actor), at)
        return True
    return kind in RAISES or kind in CLEARS or kind in AUDITED


def _by(event: LockerEvent, actor: str) -> str:
    by = event.data.get("by")
    if isinstance(by, str) and by and by != "applicant":
        return f"{actor}/staff:{by}"[:100]
    return actor


def _handover(session: Session, locker_id: str, event: LockerEvent) -> Handover | None:
    hid = event.data.get("handover_id")
    if hid is None:
        return None
    if isinstance(hid, bool) or not isinstance(hid, int) or not 1 <= hid <= 2**31 - 1:
        raise Refused(f"handover_id {str(hid)[:40]!r} is not a handover id")
    handover = session.get(Handover, hid)
    # Another locker's handover named in our payload is treated exactly like an unknown
    # one: a locker can only ever move its own handovers.
    if handover is None or handover.locker_id != locker_id:
        raise Refused(f"locker {locker_id} has no handover {hid}")
    return handover


def _follow_compartment(session: Session, handover: Handover, number: int) -> None:
    """A licence goes into the compartment the locker chose at load time (the smallest free
    one of the size, in its own view); the cloud follows so both agree on where it is."""
    current = session.get(Compartment, handover.compartment_id)
    if current is None or current.number == number:
        return
    target = session.scalar(
        select(Compartment).where(
            Compartment.locker_id == handover.locker_id, Compartment.number == number
        )
    )
    if target is None:
        raise Refused(f"locker {handover.locker_id} has no compartment {number}")
    moved = session.execute(
        update(Compartment)
        .where(Compartment.id == target.id, Compartment.state == CompartmentState.free.value)
        .values(state=CompartmentState.reserved.value, handover_id=handover.id)
    ).rowcount
    if moved != 1:
        log.warning(
            "handover %s deposited in compartment %s, which the cloud holds for another: "
            "keeping compartment %s",
            handover.id,
            number,
            current.number,
        )
        return
    session.execute(
        update(Handover).where(Handover.id == handover.id).values(compartment_id=target.id)
    )
    handover.compartment_id = target.id
    session.execute(
        update(Compartment)
        .where(Compartment.id == current.id, Compartment.handover_id == handover.id)
        .values(state=CompartmentState.free.value, handover_id=None)
    )


def _tell_staff(locker_id: str, handover: Handover, event: LockerEvent) -> None:
    notices.warning(
        "drop-off waiting for staff: handover %s at locker %s compartment %s "
        "(新投递材料待收取 new documents to collect)",
        handover.id,
        locker_id,
        event.compartment,
    )
