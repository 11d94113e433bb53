"""What one locker event does to the cloud's state: alarms, audit lines, handovers.

Business events go through the same service functions as the HTTP locker endpoints, so a
drop-off reported over MQTT moves exactly as one reported over HTTP would.
"""

import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlmodel import Session

from cloud_api.errors import NoFreeCompartment
from cloud_api.models.common import utcnow
from cloud_api.models.handover import Handover, HandoverKind, HandoverState
from cloud_api.models.locker import Compartment, CompartmentState
from cloud_api.models.monitoring import AlarmKind
from cloud_api.services import alarms, audit, handovers, lockers, lost_codes
from cloud_api.services.handovers import HandoverPolicy
from xinbao import lost_code
from xinbao.allocation import Choice, Unusable, deviation_text, numbers_text
from xinbao.contract import EventType, LockerEvent, deposit_placement

log = logging.getLogger(__name__)
# A drop-off waiting for staff is announced here (the API's log, the demo's console) and on
# the dashboard (cloud_api.web.notices lists the drop-offs that wait).
notices = logging.getLogger("xinbao.notices")

# Facts worth a line in the audit trail (电子监察) as they are.
AUDITED = {
    EventType.CODE_REFUSED,
    EventType.LOCKOUT,
    # One per lockout window, with the count of guesses it refused unchecked: the cabinet
    # never sends those one by one (xinbao/lockout.py), so a keypad flood is O(1) lines here.
    EventType.LOCKOUT_ENDED,
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
    # The item that stayed in after a pickup's close came out (or the pickup completed).
    EventType.ITEM_REMOVED: AlarmKind.item_still_inside,
    EventType.COLLECTED: AlarmKind.item_still_inside,
}

# Ended in the cloud before anything went in; a locker off line may still take the item.
ENDED_UNFILLED = (HandoverState.cancelled.value, HandoverState.expired.value)


class Refused(Exception):
    """The event names something that is not this locker's: stored, never applied."""


def apply_event(
    session: Session,
    policy: HandoverPolicy,
    locker_id: str,
    event: LockerEvent,
    at: datetime,
    now: datetime | None = None,
) -> bool:
    """Apply one event inside the open transaction; True if it changed more than the log.
    ``at``: when it happened (never after ``now``); ``now``: the cloud's clock.

    The handover services commit themselves; everything else is committed by the caller.
    """
    kind = event.type
    if kind is EventType.CODE_REISSUE_REQUESTED:
        return _lost_code(session, policy, locker_id, event, now or at)
    actor = f"locker:{locker_id}"
    place = {"compartment": event.compartment, "seq": event.seq, "data": event.data}
    if kind in RAISES:
        said = {**place, "data": {**event.data, **_staff_message(event)}}
        alarms.raise_alarm(session, locker_id, RAISES[kind], at, **said)
    if kind in CLEARS:
        alarms.clear_alarms(session, locker_id, CLEARS[kind], at, **place)
    if kind is EventType.LOCKOUT and event.data.get("alarm") is True:
        # The second lockout level: someone keeps guessing at this cabinet.
        who = event.data.get("staff_no")
        message = (
            f"lockout level {event.data.get('level')}: "
            + (f"staff log-ins as {str(who)[:32]}" if who else "keypad")
            + " guessed at repeatedly"
        )
        alarms.raise_alarm(
            session,
            locker_id,
            AlarmKind.lockout,
            at,
            seq=event.seq,
            data={**event.data, "message": message},
        )
    if kind in AUDITED:
        audit.append(
            session,
            actor,
            f"locker.{kind.value}",
            actor,
            {"compartment": event.compartment, "seq": event.seq, **event.data},
        )
    if kind is EventType.ITEM_DETECTED and event.data.get("reason") == "item_still_inside":
        # The door closed on a pickup (or staff collect) and the sensor still sees an item:
        # the cabinet keeps it occupied and the handover as it was; staff should look.
        alarms.raise_alarm(session, locker_id, AlarmKind.item_still_inside, at, **place)
        audit.append(
            session,
            actor,
            "locker.item_still_inside",
            f"locker:{locker_id}",
            {"compartment": event.compartment, "seq": event.seq, **event.data},
        )
        return True
    if kind is EventType.DEPOSITED:
        handover = _handover(session, locker_id, event)
        if handover is None:
            return kind in AUDITED
        if handover.state == HandoverState.reserved.value:
            _follow_compartment(session, locker_id, handover, event, at)
        elif handover.state in ENDED_UNFILLED:
            _deposited_after_end(session, locker_id, handover, event, at)
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


def _lost_code(
    session: Session, policy: HandoverPolicy, locker_id: str, event: LockerEvent, now: datetime
) -> bool:
    """The kiosk's lost-code request (xinbao/lost_code.py), checked strictly: the cabinet
    that sent it may be hostile. What it can reach is decided by lost_codes: a code out at
    this locker, never elsewhere."""
    if event.compartment is not None:
        raise Refused("a lost-code request names no compartment")
    try:
        number, digest = lost_code.parse_request(event.data)
    except lost_code.BadRequest as err:
        raise Refused(f"lost-code request: {err}") from None
    _, reissued = lost_codes.request_at_kiosk(
        session, policy, locker_id, number, digest, now, event.ts, str(event.event_id)
    )
    if reissued:  # the locker learns the new counters (ingest syncs after the commit)
        session.info.setdefault("resync", set()).update(h.id for h in reissued)
    return True


def _staff_message(event: LockerEvent) -> dict[str, str]:
    """What staff read on the alarm: which compartments a silent board or a jam takes out
    (the cloud offers none of them meanwhile, cloud_api/services/placement.py)."""
    if event.type is EventType.BOARD_UNREACHABLE:
        named = event.data.get("compartments")
        numbers = [n for n in named if isinstance(n, int)] if isinstance(named, list) else []
        board = event.data.get("board")
        if numbers:
            word = "compartment" if len(numbers) == 1 else "compartments"
            return {
                "message": f"board {board} does not answer: "
                f"{word} {numbers_text(numbers)} unavailable"
            }
    if event.type is EventType.DOOR_JAMMED and event.compartment is not None:
        return {
            "message": f"compartment {event.compartment} jammed: unavailable until it opens "
            "or staff clear it"
        }
    return {}


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


def _follow_compartment(
    session: Session, locker_id: str, handover: Handover, event: LockerEvent, at: datetime
) -> None:
    """The item went into the event's compartment: the cloud follows the cabinet, always.

    The cabinet opens the compartment the cloud reserved unless the shared allocation rule
    forbids it there (its board is silent, its door jammed, something inside); then it uses
    the rule's pick and says which it planned and why (``planned``, ``deviation``). Either
    way the handover, both compartments and the audit trail move to the truth, and staff
    get an alarm naming both compartments: nothing is kept silently.
    """
    number = event.compartment
    current = session.get(Compartment, handover.compartment_id)
    if number is None or current is None or current.number == number:
        return
    target, displaced = _compartment_and_holder(session, locker_id, number, handover)
    planned, deviation = deposit_placement(event)
    reason = deviation or "cabinet_chose"
    lockers.assign_compartment(session, handover, target, CompartmentState.reserved)
    message = (
        f"handover {handover.id} ({handover.kind}) is in compartment {number}, "
        f"not {current.number} as the cloud had it"
    )
    if deviation:
        said = Choice(number, planned or current.number, _unusable(deviation))
        message += ": " + deviation_text(said)
    views = {"cloud": current.number, "cabinet": number}
    moved_other = _rehome(session, locker_id, displaced, current, handover)
    if not moved_other or moved_other.get("to") != current.number:
        lockers.release_compartment(session, current.id, handover.id)
    audit.append(
        session,
        f"locker:{locker_id}",
        "handover.compartment_moved",
        f"handover:{handover.id}",
        {
            "from": current.number,
            "to": number,
            "planned": planned,
            "reason": reason,
            "seq": event.seq,
            **({"displaced": moved_other} if moved_other else {}),
        },
    )
    place = (number, event.seq)
    _placement_alarm(session, locker_id, at, place, handover, views, reason, message, moved_other)


def _deposited_after_end(
    session: Session, locker_id: str, handover: Handover, event: LockerEvent, at: datetime
) -> None:
    """The cloud cancelled (or expired) the handover while the locker was off line and never
    heard of it; the code was typed there and the item went in. The hardware wins: the
    handover takes the compartment back (a reservation made on it meanwhile moves, as a
    displaced one does), the caller deposits it, and staff get an alarm saying so."""
    ended = handover.state
    old = session.get(Compartment, handover.compartment_id)
    number = event.compartment if event.compartment is not None else (old and old.number)
    target, displaced = _compartment_and_holder(session, locker_id, number, handover)
    moved_other = _rehome(session, locker_id, displaced, None, handover)
    lockers.assign_compartment(session, handover, target, CompartmentState.reserved)
    message = (
        f"handover {handover.id} ({handover.kind}) was {ended} in the cloud, but the cabinet "
        f"took the item into compartment {number} while off line: it is inside"
    )
    detail = {"from": ended, "compartment": number, "seq": event.seq}
    if moved_other:
        detail["displaced"] = moved_other
    audit.append(
        session,
        f"locker:{locker_id}",
        "handover.deposited_after_end",
        f"handover:{handover.id}",
        detail,
    )
    views = {"cloud": ended, "cabinet": number}
    reason = "deposited_after_end"
    place = (number, event.seq)
    _placement_alarm(session, locker_id, at, place, handover, views, reason, message, moved_other)
    # The cabinet hears the handover's state again (it kept the item, commands.py).
    session.info.setdefault("resync", set()).add(handover.id)


def _compartment_and_holder(
    session: Session, locker_id: str, number: int | None, handover: Handover
) -> tuple[Compartment, Handover | None]:
    """The compartment the event names, and the other handover holding it, if any."""
    target = session.scalar(
        select(Compartment).where(Compartment.locker_id == locker_id, Compartment.number == number)
    )
    if target is None:
        raise Refused(f"locker {locker_id} has no compartment {number}")
    holder = None
    if target.handover_id not in (None, handover.id):
        holder = session.get(Handover, target.handover_id)
    return target, holder


def _placement_alarm(
    session: Session,
    locker_id: str,
    at: datetime,
    place: tuple[int | None, int],
    handover: Handover,
    views: dict,
    reason: str,
    message: str,
    moved_other: dict | None,
) -> None:
    """Staff hear where the item really is (``place``: compartment and event seq), with both
    views and any reservation it moved."""
    compartment, seq = place
    displaced = {"displaced": moved_other} if moved_other else {}
    data = {"handover_id": handover.id, **views, "reason": reason, "message": message}
    alarms.raise_alarm(
        session,
        locker_id,
        AlarmKind.placement,
        at,
        compartment=compartment,
        seq=seq,
        data={**data, **displaced},
    )
    notices.warning("locker %s: %s", locker_id, message)


def _unusable(word: str | None) -> Unusable | None:
    try:
        return Unusable(word) if word else None
    except ValueError:
        return None


def _rehome(
    session: Session,
    locker_id: str,
    displaced: Handover | None,
    vacated: Compartment | None,
    mover: Handover,
) -> dict | None:
    """Another handover held the compartment the item went into. If it is only reserved
    (nothing of it inside yet), it takes the compartment the mover left, when of its size,
    else another the rule offers; the cabinet hears of it by a sync. An item the cloud
    believed inside stays an alarm for staff (two items cannot share a door)."""
    if displaced is None:
        return None
    if displaced.state != HandoverState.reserved.value:
        return {"handover_id": displaced.id, "state": displaced.state, "kept": True}
    old = session.get(Compartment, displaced.compartment_id)
    if (
        vacated is not None
        and vacated.handover_id == mover.id
        and old is not None
        and vacated.size == old.size
    ):
        home = vacated
    else:
        try:
            home = lockers.claim_compartment(session, locker_id, old.size if old else "M")
        except NoFreeCompartment:
            return _cancel_displaced(session, mover, displaced, old)
    lockers.assign_compartment(session, displaced, home, CompartmentState.reserved)
    audit.append(
        session,
        f"locker:{mover.locker_id}",
        "handover.compartment_moved",
        f"handover:{displaced.id}",
        {
            "from": old.number if old else None,
            "to": home.number,
            "reason": "displaced",
            "by_handover": mover.id,
        },
    )
    session.info.setdefault("resync", set()).add(displaced.id)
    return {"handover_id": displaced.id, "from": old.number if old else None, "to": home.number}


def _cancel_displaced(
    session: Session, mover: Handover, displaced: Handover, old: Compartment | None
) -> dict:
    """No compartment of its size is left for a reservation the cabinet's item displaced:
    it cannot be kept, so it is cancelled (its code revoked at the cabinet by the resync),
    and the caller's alarm names it for staff; nothing of it was inside."""
    actor = f"locker:{mover.locker_id}"
    session.execute(
        update(Handover)
        .where(Handover.id == displaced.id, Handover.state == HandoverState.reserved.value)
        .values(state=HandoverState.cancelled.value, finished_at=utcnow(), updated_at=utcnow())
    )
    displaced.state = HandoverState.cancelled.value
    number = old.number if old else None
    audit.append(
        session,
        actor,
        "handover.state",
        f"handover:{displaced.id}",
        {"from": "reserved", "to": "cancelled", "kind": displaced.kind, "reason": "displaced"},
    )
    audit.append(
        session,
        actor,
        "code.revoked",
        f"handover:{displaced.id}",
        {"counter": displaced.code_counter, "reason": "displaced", "compartment": number},
    )
    session.info.setdefault("resync", set()).add(displaced.id)
    return {"handover_id": displaced.id, "from": number, "cancelled": "no compartment left"}


def _tell_staff(locker_id: str, handover: Handover, event: LockerEvent) -> None:
    notices.warning(
        "drop-off waiting for staff: handover %s at locker %s compartment %s "
        "(新投递材料待收取 new documents to collect)",
        handover.id,
        locker_id,
        event.compartment,
    )
