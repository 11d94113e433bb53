"""Alarms raised from locker events and presence, cleared by the event that ends them, and
acknowledged by staff.

An alarm is open while ``cleared_at`` is empty. Events of one locker can reach two API
processes in either order, so each alarm remembers the seq of the event that raised it and
a clearing event only clears alarms raised before it; an alarm whose clearing event (higher
seq) was already applied is stored cleared from the start.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlmodel import Session

from cloud_api.errors import NotFound
from cloud_api.models.monitoring import Alarm, AlarmKind, LockerEventRecord
from cloud_api.services import audit

# What clears each kind: event types (None for locker_offline, cleared by presence).
CLEARED_BY: dict[AlarmKind, tuple[str, ...]] = {
    AlarmKind.door_left_open: ("door_closed",),
    # A forced door stays open as an alarm until staff acknowledge it: someone must look.
    AlarmKind.door_forced: (),
    AlarmKind.door_jammed: ("door_opened",),
    AlarmKind.board_unreachable: ("board_recovered",),
    AlarmKind.locker_offline: (),
    # Staff look, then acknowledge: the cloud has already moved to the truth.
    AlarmKind.placement: (),
    AlarmKind.item_still_inside: ("item_removed", "collected"),
    # Cleared by the next full sync whose comparison agrees there, or by staff.
    AlarmKind.mismatch: (),
    # Staff acknowledge it: someone must find out why the locker's account floods.
    AlarmKind.flooding: (),
    # Someone kept guessing: staff look, then acknowledge or lift the lockout.
    AlarmKind.lockout: (),
}


def _same_place(kind: AlarmKind, compartment: int | None, data: dict[str, Any]):
    """Extra filter that says which open alarm an event concerns."""
    if kind is AlarmKind.board_unreachable:
        return lambda alarm: (
            alarm.data.get("board") == data.get("board")
            and alarm.data.get("bus") == data.get("bus")
        )
    if kind in (AlarmKind.locker_offline, AlarmKind.flooding):
        return lambda alarm: True
    if kind is AlarmKind.placement:
        # One per handover moved: two items corrected into one compartment are two stories.
        return lambda alarm: (
            alarm.compartment == compartment
            and alarm.data.get("handover_id") == data.get("handover_id")
        )
    return lambda alarm: alarm.compartment == compartment


def _open_alarms(session: Session, locker_id: str, kind: AlarmKind) -> list[Alarm]:
    return list(
        session.scalars(
            select(Alarm).where(
                Alarm.locker_id == locker_id,
                Alarm.kind == kind.value,
                Alarm.cleared_at.is_(None),
            )
        )
    )


def _cleared_later(
    session: Session, locker_id: str, kind: AlarmKind, compartment, data, seq: int
) -> bool:
    clearing = CLEARED_BY[kind]
    if not clearing:
        return False
    later = session.scalars(
        select(LockerEventRecord).where(
            LockerEventRecord.locker_id == locker_id,
            LockerEventRecord.type.in_(clearing),
            LockerEventRecord.seq > seq,
        )
    )
    same = _same_place(kind, compartment, data)
    return any(same(Alarm(compartment=e.compartment, data=e.data or {})) for e in later)


def raise_alarm(
    session: Session,
    locker_id: str,
    kind: AlarmKind,
    now: datetime,
    *,
    compartment: int | None = None,
    seq: int | None = None,
    data: dict[str, Any] | None = None,
) -> Alarm | None:
    """Open an alarm unless the same one is open already (inside the caller's transaction)."""
    data = data or {}
    same = _same_place(kind, compartment, data)
    if any(same(a) for a in _open_alarms(session, locker_id, kind)):
        return None
    alarm = Alarm(
        locker_id=locker_id,
        compartment=compartment,
        kind=kind.value,
        raised_at=now,
        raised_seq=seq,
        data=data,
    )
    if seq is not None and _cleared_later(session, locker_id, kind, compartment, data, seq):
        alarm.cleared_at = now
    session.add(alarm)
    session.flush()
    return alarm


def note_flood(session: Session, locker_id: str, refused: int, now: datetime) -> Alarm | None:
    """``refused`` more of this locker's messages were over its ingest budget: raise the
    flooding alarm, or add them to the open one's count (the summary of the junk, instead of
    a row each). None for a locker that is not registered (no alarm can name it)."""
    from cloud_api.models.locker import Locker

    if session.get(Locker, locker_id) is None:
        return None
    for alarm in _open_alarms(session, locker_id, AlarmKind.flooding):
        data = dict(alarm.data or {})
        data["refused"] = int(data.get("refused", 0)) + refused
        data["last_at"] = now.isoformat()
        alarm.data = data
        session.flush()
        return alarm
    return raise_alarm(
        session,
        locker_id,
        AlarmKind.flooding,
        now,
        data={"refused": refused, "first_at": now.isoformat(), "last_at": now.isoformat()},
    )


def clear_alarms(
    session: Session,
    locker_id: str,
    kind: AlarmKind,
    now: datetime,
    *,
    compartment: int | None = None,
    seq: int | None = None,
    data: dict[str, Any] | None = None,
) -> int:
    same = _same_place(kind, compartment, data or {})
    cleared = 0
    for alarm in _open_alarms(session, locker_id, kind):
        if not same(alarm):
            continue
        if seq is not None and alarm.raised_seq is not None and alarm.raised_seq > seq:
            continue  # raised by a later event: this older one does not end it
        alarm.cleared_at = now
        cleared += 1
    session.flush()
    return cleared


def list_alarms(
    session: Session,
    *,
    open_only: bool,
    locker_id: str | None,
    offset: int,
    limit: int,
) -> list[Alarm]:
    query = select(Alarm)
    if open_only:
        query = query.where(Alarm.cleared_at.is_(None))
    if locker_id is not None:
        query = query.where(Alarm.locker_id == locker_id)
    return list(session.scalars(query.order_by(Alarm.id.desc()).offset(offset).limit(limit)))


def acknowledge(session: Session, alarm_id: int, actor: str, now: datetime) -> Alarm:
    """Staff have seen the alarm and dealt with it: it is cleared (if it was not yet)."""
    alarm = session.get(Alarm, alarm_id, with_for_update=True)
    if alarm is None:
        raise NotFound(f"no alarm {alarm_id}")
    if alarm.acked_at is None:
        session.execute(
            update(Alarm)
            .where(Alarm.id == alarm_id)
            .values(acked_at=now, acked_by=actor, cleared_at=alarm.cleared_at or now)
        )
        audit.append(
            session,
            actor,
            "alarm.acknowledged",
            f"locker:{alarm.locker_id}",
            {"alarm": alarm_id, "kind": alarm.kind, "compartment": alarm.compartment},
        )
    session.commit()
    session.refresh(alarm)
    return alarm
