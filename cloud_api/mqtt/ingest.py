"""Applying what lockers publish: events, presence, telemetry and command replies.

No paho here: each method takes the locker id from the topic and the raw payload, does one
transaction and returns. Events are stored and applied in the same transaction, under a
unique event_id, so a redelivery (the broker resends what was not acknowledged, e.g. after
this process died between the commit and the PUBACK) finds the row and changes nothing.
Business events go through the same service functions as the HTTP locker endpoints.

Per locker, event processing is serialised on the ``locker_link`` row (SELECT ... FOR UPDATE;
SQLite serialises every writer anyway), so two API processes never interleave one locker.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from cloud_api.errors import CloudError
from cloud_api.models.handover import Handover, HandoverKind
from cloud_api.models.locker import Compartment, CompartmentState, Locker
from cloud_api.models.monitoring import AlarmKind, LockerCommand, LockerEventRecord, LockerLink
from cloud_api.models.remote_open import RemoteOpenRequest
from cloud_api.mqtt.errors import UnknownLocker
from cloud_api.services import alarms, audit, handovers
from cloud_api.services.handovers import HandoverPolicy
from xinbao.contract import (
    PRESENCE_OFFLINE,
    PRESENCE_ONLINE,
    CommandReply,
    ContractError,
    EventType,
    LockerEvent,
    Telemetry,
)

log = logging.getLogger(__name__)

# Facts worth a line in the audit trail (电子监察) as they are.
_AUDITED = {
    EventType.CODE_REFUSED,
    EventType.LOCKOUT,
    EventType.COMMAND_REJECTED,
    EventType.STAFF_LOGIN,
    EventType.DOOR_FORCED,
}
_RAISES = {
    EventType.DOOR_LEFT_OPEN: AlarmKind.door_left_open,
    EventType.DOOR_FORCED: AlarmKind.door_forced,
    EventType.DOOR_JAMMED: AlarmKind.door_jammed,
    EventType.BOARD_UNREACHABLE: AlarmKind.board_unreachable,
}
_CLEARS = {
    EventType.DOOR_CLOSED: AlarmKind.door_left_open,
    EventType.DOOR_OPENED: AlarmKind.door_jammed,
    EventType.BOARD_RECOVERED: AlarmKind.board_unreachable,
}


class Ingested(StrEnum):
    applied = "applied"
    stored = "stored"
    duplicate = "duplicate"
    ignored = "ignored"
    refused = "refused"


class _Refused(Exception):
    """The event names something that is not this locker's: stored, never applied."""


@dataclass(frozen=True)
class ReplyOutcome:
    request_id: str
    status: str


def remote_open_outcome(ok: bool, result: dict[str, Any] | None, error: str | None):
    """(status, detail) of a remote open from the locker's reply."""
    if not ok:
        return "rejected", (error or "refused")[:300]
    outcome = (result or {}).get("outcome")
    if outcome in ("opened", "jammed", "no_response"):
        return outcome, None
    if outcome == "already_open":
        return "opened", "the door was already open"
    return "rejected", f"unexpected reply: {str(result)[:250]}"


class Ingest:
    def __init__(
        self,
        engine: Engine,
        policy: HandoverPolicy,
        received_by: str,
        clock: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._policy = policy
        self._received_by = received_by[:64]
        self._clock = clock

    def _session(self) -> Session:
        return Session(self._engine, expire_on_commit=False)

    def _lock_link(self, session: Session, locker_id: str) -> LockerLink:
        """The locker's link row, locked for this transaction (created on first contact)."""
        link = session.get(LockerLink, locker_id, with_for_update=True)
        if link is not None:
            return link
        if session.get(Locker, locker_id) is None:
            raise UnknownLocker(f"locker {locker_id!r} is not registered")
        try:
            with session.begin_nested():
                session.add(LockerLink(locker_id=locker_id))
        except IntegrityError:
            pass  # another process created it a moment ago
        return session.get(LockerLink, locker_id, with_for_update=True, populate_existing=True)

    # --- events -------------------------------------------------------------------------

    def event(self, locker_id: str, raw: bytes) -> Ingested:
        event = LockerEvent.from_bytes(raw)  # ContractError: the caller drops it
        now = self._clock()
        with self._session() as session:
            link = self._lock_link(session, locker_id)
            row = self._row(locker_id, event, now)
            session.add(row)
            try:
                session.flush()
            except IntegrityError:
                session.rollback()
                return Ingested.duplicate
            link.last_seen_at = now
            link.last_seq = max(link.last_seq or 0, event.seq)
            row.outcome = Ingested.applied.value
            try:
                applied = self._apply(session, locker_id, event, min(event.ts, now), now)
            except _Refused as err:
                why = f"refused: {err}"
            except CloudError as err:
                # The service refused (e.g. a staff member already closed the handover from
                # the dashboard): the event is kept as a fact, the state stays as it is.
                why = f"ignored: {err.detail}"
            else:
                if not applied:
                    row.outcome = Ingested.stored.value
                if session.in_transaction():
                    session.commit()
                return Ingested.applied if applied else Ingested.stored
            # End this transaction before the next: on SQLite it holds the write lock.
            session.rollback()
        return self._store_only(locker_id, event, now, why)

    def _row(self, locker_id: str, event: LockerEvent, now: datetime) -> LockerEventRecord:
        return LockerEventRecord(
            event_id=str(event.event_id),
            locker_id=locker_id,
            seq=event.seq,
            ts=event.ts,
            type=event.type.value,
            compartment=event.compartment,
            data=event.data,
            received_at=now,
            received_by=self._received_by,
        )

    def _store_only(self, locker_id: str, event: LockerEvent, now: datetime, why: str) -> Ingested:
        log.warning("event %s from %s not applied: %s", event.event_id, locker_id, why)
        with self._session() as session:
            link = self._lock_link(session, locker_id)
            row = self._row(locker_id, event, now)
            row.outcome = why[:300]
            session.add(row)
            try:
                session.flush()
            except IntegrityError:
                session.rollback()
                return Ingested.duplicate
            link.last_seen_at = now
            link.last_seq = max(link.last_seq or 0, event.seq)
            session.commit()
        return Ingested.refused if why.startswith("refused") else Ingested.ignored

    def _apply(
        self, session: Session, locker_id: str, event: LockerEvent, at: datetime, now: datetime
    ) -> bool:
        """Apply one event inside the open transaction; True if it changed more than the log.

        The handover services commit themselves; everything else is committed by the caller.
        """
        kind = event.type
        actor = f"locker:{locker_id}"
        place = {"compartment": event.compartment, "seq": event.seq, "data": event.data}
        if kind in _RAISES:
            alarms.raise_alarm(session, locker_id, _RAISES[kind], at, **place)
        if kind in _CLEARS:
            alarms.clear_alarms(session, locker_id, _CLEARS[kind], at, **place)
        if kind in _AUDITED:
            audit.append(
                session,
                actor,
                f"locker.{kind.value}",
                actor,
                {"compartment": event.compartment, "seq": event.seq, **event.data},
            )
        if kind is EventType.DEPOSITED:
            handover = self._handover(session, locker_id, event)
            if handover is None:
                return kind in _AUDITED
            if handover.kind == HandoverKind.pickup and event.compartment is not None:
                self._follow_compartment(session, handover, event.compartment)
            handovers.report_deposited(session, self._policy, handover, self._by(event, actor), at)
            return True
        if kind is EventType.COLLECTED:
            handover = self._handover(session, locker_id, event)
            if handover is None:
                return False
            if handover.kind == HandoverKind.pickup:
                handovers.report_collected(
                    session, self._policy, handover, self._by(event, actor), at
                )
            else:
                handovers.staff_collect(session, handover, self._by(event, actor), at)
            return True
        if kind is EventType.STAFF_ACTION and event.data.get("action") == "recovered":
            handover = self._handover(session, locker_id, event)
            if handover is None:
                return False
            handovers.staff_recover(session, handover, self._by(event, actor), at)
            return True
        return kind in _RAISES or kind in _CLEARS or kind in _AUDITED

    @staticmethod
    def _by(event: LockerEvent, actor: str) -> str:
        by = event.data.get("by")
        if isinstance(by, str) and by and by != "applicant":
            return f"{actor}/staff:{by}"[:100]
        return actor

    def _handover(self, session: Session, locker_id: str, event: LockerEvent) -> Handover | None:
        hid = event.data.get("handover_id")
        if hid is None:
            return None
        if isinstance(hid, bool) or not isinstance(hid, int) or not 1 <= hid <= 2**31 - 1:
            raise _Refused(f"handover_id {str(hid)[:40]!r} is not a handover id")
        handover = session.get(Handover, hid)
        # Another locker's handover named in our payload is treated exactly like an unknown
        # one: a locker can only ever move its own handovers.
        if handover is None or handover.locker_id != locker_id:
            raise _Refused(f"locker {locker_id} has no handover {hid}")
        return handover

    def _follow_compartment(self, session: Session, handover: Handover, number: int) -> None:
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
            raise _Refused(f"locker {handover.locker_id} has no compartment {number}")
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

    # --- presence and telemetry ---------------------------------------------------------

    def presence(self, locker_id: str, raw: bytes) -> bool:
        """Record online/offline; True when the locker (re)appeared and needs a full sync."""
        if raw == b"":
            return False  # someone cleared the retained presence: no news
        if raw not in (PRESENCE_ONLINE, PRESENCE_OFFLINE):
            raise ContractError(f"presence must be 'online' or 'offline', not {raw[:40]!r}")
        online = raw == PRESENCE_ONLINE
        now = self._clock()
        with self._session() as session:
            link = self._lock_link(session, locker_id)
            link.online = online
            link.presence_at = now
            if online:
                link.last_seen_at = now
                alarms.clear_alarms(session, locker_id, AlarmKind.locker_offline, now)
            else:
                alarms.raise_alarm(session, locker_id, AlarmKind.locker_offline, now)
            session.commit()
        return online

    def telemetry(self, locker_id: str, raw: bytes) -> bool:
        """Keep the last values; True if this shows a locker we believed off line is back (its
        ``online`` never reached us, e.g. it came while no API process was connected)."""
        report = Telemetry.from_bytes(raw)
        now = self._clock()
        with self._session() as session:
            link = self._lock_link(session, locker_id)
            link.telemetry_at = now
            link.last_seen_at = now
            link.outbox_depth = report.outbox_depth
            link.version = report.version[:64]
            link.uptime_s = report.uptime_s
            link.boards = [b.model_dump(mode="json") for b in report.boards]
            back = not link.online and (link.presence_at is None or report.ts > link.presence_at)
            if back:
                link.online = True
                link.presence_at = now
                alarms.clear_alarms(session, locker_id, AlarmKind.locker_offline, now)
            session.commit()
        return back

    # --- replies ------------------------------------------------------------------------

    def reply(self, locker_id: str, raw: bytes) -> ReplyOutcome | None:
        reply = CommandReply.from_bytes(raw)
        rid = str(reply.request_id)
        now = self._clock()
        with self._session() as session:
            command = session.scalar(
                select(LockerCommand).where(LockerCommand.request_id == rid).with_for_update()
            )
            if command is None or command.locker_id != locker_id:
                raise ContractError(f"locker {locker_id} answered a command not sent to it: {rid}")
            # A late reply still tells the truth about the door: it replaces "timeout".
            if command.status not in ("sent", "timeout"):
                return None
            command.status = "ok" if reply.ok else "failed"
            command.result = reply.result
            command.error = (reply.error or "")[:300] or None
            command.replied_at = now
            if command.remote_open_id is not None:
                self._close_remote_open(session, command, reply, now)
            session.commit()
            return ReplyOutcome(rid, command.status)

    def _close_remote_open(
        self, session: Session, command: LockerCommand, reply: CommandReply, now: datetime
    ) -> None:
        status, detail = remote_open_outcome(reply.ok, reply.result, reply.error)
        request = session.get(RemoteOpenRequest, command.remote_open_id, with_for_update=True)
        if request is None:
            return
        late = request.status == "timeout"
        request.status = status
        request.detail = (f"reply after the timeout; {detail or ''}" if late else detail) or None
        request.finished_at = now
        audit.append(
            session,
            f"locker:{command.locker_id}",
            "door.remote_open",
            f"locker:{command.locker_id}",
            {
                "request": request.id,
                "compartment": request.compartment_number,
                "outcome": status,
                "detail": request.detail,
                "request_id": command.request_id,
            },
        )
