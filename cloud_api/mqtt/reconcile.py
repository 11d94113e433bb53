"""Comparing the cabinet's physical view with the cloud's after every full sync.

The locker answers each full sync with what it sees (``contract.CabinetReport``: per
compartment the door, what it believes is inside, what the occupancy sensor sees and which
handover's item it holds). Once the cloud has applied every event the view reflects (its
``seq``), each difference becomes a ``mismatch`` alarm naming both views, e.g. "cloud: #8
holds H-4; cabinet: #8 empty, #4 holds H-4". Where the truth is certain (the cabinet holds
the item in another compartment, its sensor or belief says it is there, the cloud's own
compartment for it is empty at the cabinet, and the new one is free in the cloud), the
cloud moves the handover there, audited. Nothing is silently overwritten; a compartment
that agrees again has its alarm cleared.
"""

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from cloud_api.models.handover import ACTIVE_STATES, Handover
from cloud_api.models.locker import Compartment, CompartmentState
from cloud_api.models.monitoring import Alarm, AlarmKind
from cloud_api.services import alarms, audit, lockers
from xinbao.contract import CabinetReport, CompartmentReport

log = logging.getLogger(__name__)
notices = logging.getLogger("xinbao.notices")


@dataclass(frozen=True)
class Mismatch:
    number: int
    message: str
    corrected: bool = False


def _item(seen: CompartmentReport) -> bool:
    """Whether the cabinet has an item there: its sensor where it has one and its board
    answers, else what it believes."""
    if seen.sensed is not None and seen.board_up:
        return seen.sensed
    return seen.occupied


def _cloud_text(c: Compartment | None, number: int) -> str:
    if c is None:
        return f"#{number} unknown"
    if c.state == CompartmentState.occupied.value:
        return f"#{number} holds H-{c.handover_id}" if c.handover_id else f"#{number} occupied"
    if c.state == CompartmentState.reserved.value:
        return f"#{number} reserved for H-{c.handover_id}"
    return f"#{number} free"


def _cabinet_text(seen: CompartmentReport) -> str:
    if seen.holds:
        text = f"#{seen.number} holds H-{seen.holds}"
    else:
        text = f"#{seen.number} has an item" if seen.occupied else f"#{seen.number} empty"
    if seen.sensed is not None and seen.sensed != (seen.occupied or seen.holds is not None):
        text += " (sensor: item)" if seen.sensed else " (sensor: empty)"
    return text


def _agrees(c: Compartment | None, seen: CompartmentReport) -> bool:
    if c is None:
        return False
    cloud_holds = c.handover_id if c.state == CompartmentState.occupied.value else None
    cloud_item = c.state == CompartmentState.occupied.value
    return cloud_holds == seen.holds and cloud_item == _item(seen) == seen.occupied


def when_caught_up(
    session: Session, locker_id: str, applied_seq: int, report: CabinetReport, now: datetime
) -> list[Mismatch] | None:
    """``compare`` once the cloud has applied every event the view reflects (None: not
    yet; a deposit still in flight is no mismatch). A view older than what was applied is
    history (the cloud moved on since) and is dropped: the next full sync brings a fresh one."""
    if applied_seq < report.seq:
        return None
    if applied_seq > report.seq:
        log.info(
            "locker %s: its view at seq %d is older than seq %d", locker_id, report.seq, applied_seq
        )
        return []
    found = compare(session, locker_id, report, now)
    if found:
        log.warning("locker %s: %d differences with the cabinet's view", locker_id, len(found))
    return found


def compare(
    session: Session, locker_id: str, report: CabinetReport, now: datetime
) -> list[Mismatch]:
    """Alarms for every difference, corrections where certain (inside the caller's
    transaction); the differences found."""
    rows = session.scalars(select(Compartment).where(Compartment.locker_id == locker_id))
    cloud = {c.number: c for c in rows}
    seen = {s.number: s for s in report.compartments}
    live = {
        h.id: h
        for h in session.scalars(
            select(Handover).where(
                Handover.locker_id == locker_id,
                Handover.state.in_([s.value for s in ACTIVE_STATES]),
            )
        )
    }
    found: list[Mismatch] = []
    explained: set[int] = set()
    for number in sorted(seen):
        c, s = cloud.get(number), seen[number]
        # An open door is a hand at work: what is inside settles when it closes.
        if number in explained or s.door_open or _agrees(c, s):
            continue
        holder = c.handover_id if c and c.state == CompartmentState.occupied.value else None
        where = next((x.number for x in seen.values() if holder and x.holds == holder), None)
        if holder is not None and where is not None and where != number:
            # The cabinet holds the cloud's item in another compartment.
            other = seen[where]
            message = f"cloud: {_cloud_text(c, number)}; cabinet: {_cabinet_text(s)}, "
            message += _cabinet_text(other)
            corrected = _certain(c, s, cloud.get(where), other, holder) and _move(
                session, locker_id, live.get(holder), c, cloud[where], message
            )
            explained.add(where)
            found.append(Mismatch(number, message, corrected))
            continue
        message = f"cloud: {_cloud_text(c, number)}; cabinet: {_cabinet_text(s)}"
        found.append(Mismatch(number, message))
    for m in found:
        alarms.raise_alarm(
            session,
            locker_id,
            AlarmKind.mismatch,
            now,
            compartment=m.number,
            data={"message": m.message, "corrected": m.corrected},
        )
        fixed = " (the cloud corrected itself)" if m.corrected else ""
        notices.warning("locker %s: %s%s", locker_id, m.message, fixed)
    audit.append(
        session,
        f"locker:{locker_id}",
        "locker.reconciled",
        f"locker:{locker_id}",
        {
            "seq": report.seq,
            "differences": len(found),
            "corrected": sum(m.corrected for m in found),
        },
    )
    differing = {m.number for m in found}
    for alarm in session.scalars(
        select(Alarm).where(
            Alarm.locker_id == locker_id,
            Alarm.kind == AlarmKind.mismatch.value,
            Alarm.cleared_at.is_(None),
        )
    ):
        if alarm.compartment not in differing:
            alarm.cleared_at = now
    session.flush()
    return found


def _certain(
    cloud_here: Compartment,
    seen_here: CompartmentReport,
    cloud_there: Compartment | None,
    seen_there: CompartmentReport,
    holder: int,
) -> bool:
    return (
        not _item(seen_here)
        and seen_here.holds is None
        and _item(seen_there)
        and cloud_there is not None
        and (
            cloud_there.state == CompartmentState.free.value or (cloud_there.handover_id == holder)
        )
    )


def _move(
    session: Session,
    locker_id: str,
    handover: Handover | None,
    wrong: Compartment,
    right: Compartment,
    message: str,
) -> bool:
    if handover is None:
        return False
    lockers.assign_compartment(session, handover, right, CompartmentState.occupied)
    lockers.release_compartment(session, wrong.id, handover.id)
    audit.append(
        session,
        f"locker:{locker_id}",
        "handover.compartment_reconciled",
        f"handover:{handover.id}",
        {"from": wrong.number, "to": right.number, "views": message},
    )
    session.expire(wrong)
    session.expire(right)
    return True
