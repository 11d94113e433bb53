"""Taking in what lockers publish: events, presence, telemetry and command replies.

No paho here: each method takes the locker id from the topic and the raw payload and returns.
Every event is stored at once under its unique event_id, so a redelivery (the broker resends
what was not acknowledged, e.g. after this process died between the commit and the PUBACK)
finds the row and changes nothing.

Events of one locker are applied in seq order (cloud_api.mqtt.effects says what each does).
Several API processes split the lockers' messages round-robin over the shared subscription,
so a drop-off's ``deposited`` and the staff's ``collected``, sent together after an outage,
can reach two processes at once; applied as they arrive, ``collected`` could come first, fail
the state check and leave the handover ``deposited`` for ever. So an event whose predecessor
(``locker_link.last_seq + 1``) has not been applied is stored ``pending`` and applied when it
has, by whichever process applies the predecessor; one whose predecessor does not come within
ORDER_WAIT_S is applied anyway, with the gap logged. Per locker all of this is serialised on
the ``locker_link`` row (SELECT ... FOR UPDATE; SQLite serialises every writer anyway).
"""

import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from cloud_api.errors import CloudError
from cloud_api.metrics.instruments import CloudMetrics
from cloud_api.models.locker import Locker
from cloud_api.models.monitoring import AlarmKind, LockerEventRecord, LockerLink
from cloud_api.mqtt import reconcile
from cloud_api.mqtt.effects import Refused, apply_event
from cloud_api.mqtt.errors import LinkDown, UnknownLocker
from cloud_api.mqtt.replies import ReplyOutcome, store_reply
from cloud_api.services import alarms
from cloud_api.services.handovers import HandoverPolicy
from xinbao.contract import (
    PRESENCE_OFFLINE,
    PRESENCE_ONLINE,
    CabinetReport,
    CommandReply,
    ContractError,
    EventMark,
    LockerEvent,
    Telemetry,
)

log = logging.getLogger(__name__)

# How long an event waits for a missing predecessor before it is applied anyway. The
# controller numbers events from an AUTOINCREMENT key and publishes every one, so a gap is
# an event still on its way (another API process, a redelivery): it rarely takes long.
ORDER_WAIT_S = 3.0
_FULL_SWEEP_S = 15.0


class Ingested(StrEnum):
    applied = "applied"
    stored = "stored"
    pending = "pending"  # held back until its predecessor (by seq) is applied
    duplicate = "duplicate"
    ignored = "ignored"
    refused = "refused"


def _event_of(row: LockerEventRecord) -> LockerEvent:
    return LockerEvent(
        event_id=uuid.UUID(row.event_id),
        seq=row.seq,
        ts=row.ts,
        type=row.type,
        compartment=row.compartment,
        data=row.data or {},
    )


def _numbering_restart(locker_id: str, link: LockerLink, row: LockerEventRecord) -> None:
    """A new event (its event_id never seen) at a seq the locker's stored run already covers
    can only come from a numbering that started again (a wiped controller): the run starts
    again from this row."""
    if row.seq <= link.stored_upto:
        log.warning(
            "locker %s numbers its events from the start again (seq %d after %d stored)",
            locker_id,
            row.seq,
            link.stored_upto,
        )
        link.stored_upto, link.stored_upto_event, link.stored_from_id = 0, None, row.id


_MARK_BATCH = 1000


def events_mark(session: Session, locker_id: str) -> EventMark:
    """What the cloud holds of this locker's events (the run from seq 1 with no gap), moved
    on as far as the stored rows go; the caller commits. Locks the locker's link row."""
    link = session.get(LockerLink, locker_id, with_for_update=True)
    if link is None:
        return EventMark(seq=0)
    while True:
        rows = session.execute(
            select(LockerEventRecord.seq, LockerEventRecord.event_id)
            .where(
                LockerEventRecord.locker_id == locker_id,
                LockerEventRecord.seq > link.stored_upto,
                LockerEventRecord.id >= link.stored_from_id,
            )
            .order_by(LockerEventRecord.seq)
            .limit(_MARK_BATCH)
        ).all()
        moved = 0
        for seq, event_id in rows:
            if seq != link.stored_upto + 1:
                break  # a gap: the run ends here
            link.stored_upto, link.stored_upto_event = seq, event_id
            moved += 1
        if moved < _MARK_BATCH:  # a gap, or no more rows
            break
    if link.stored_upto == 0:
        return EventMark(seq=0)
    return EventMark(seq=link.stored_upto, event_id=uuid.UUID(link.stored_upto_event))


class Ingest:
    def __init__(
        self,
        engine: Engine,
        policy: HandoverPolicy,
        received_by: str,
        clock: Callable[[], datetime],
        order_wait_s: float = ORDER_WAIT_S,
        metrics: CloudMetrics | None = None,
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._policy = policy
        self._received_by = received_by[:64]
        self._clock = clock
        self.order_wait_s = order_wait_s
        # Lockers this process holds events back for -> when to look again (monotonic).
        self._held: dict[str, float] = {}
        self._next_full_sweep = 0.0
        # The cabinet's latest view per locker, waiting for the events it reflects.
        self._views: dict[str, CabinetReport] = {}
        # Asks for a sync of the handovers named (the bridge sets it).
        self.resync: Callable[[str, list[int]], object] | None = None

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
        """Store the event at once (deduped on event_id); apply it now if it is next in this
        locker's seq order, else hold it back (``pending``) for its predecessor."""
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
                self._count(locker_id, event, Ingested.duplicate)
                return Ingested.duplicate
            link.last_seen_at = now
            _numbering_restart(locker_id, link, row)
            if event.seq > link.last_seq + 1:
                session.commit()
                log.info(
                    "event %s from %s held back: seq %d, waiting for %d",
                    event.event_id,
                    locker_id,
                    event.seq,
                    link.last_seq + 1,
                )
                self._hold(locker_id, self.order_wait_s)
                return Ingested.pending
            outcome = self._apply_row(session, locker_id, link, row, event, now)
        self.apply_ready(locker_id)
        if locker_id in self._views:
            self.reconcile_ready(locker_id)
        return outcome

    def apply_ready(self, locker_id: str) -> int:
        """Apply this locker's held-back events that are next in seq order, and any whose
        missing predecessor has been waited for long enough (the gap is logged)."""
        applied = 0
        while True:
            now = self._clock()
            with self._session() as session:
                link = self._lock_link(session, locker_id)
                row = session.scalar(
                    select(LockerEventRecord)
                    .where(
                        LockerEventRecord.locker_id == locker_id,
                        LockerEventRecord.seq > link.last_seq,
                    )
                    .order_by(LockerEventRecord.seq)
                    .limit(1)
                )
                if row is None:
                    session.commit()
                    self._held.pop(locker_id, None)
                    return applied
                missing = row.seq - link.last_seq - 1
                if missing > 0:
                    waited = (now - row.received_at).total_seconds()
                    if waited < self.order_wait_s:
                        session.commit()
                        # When the oldest held event's wait is over, not before.
                        self._held[locker_id] = time.monotonic() + self.order_wait_s - waited
                        return applied
                    log.warning(
                        "locker %s: events %d..%d never arrived (waited %.1f s); applying "
                        "seq %d without them",
                        locker_id,
                        link.last_seq + 1,
                        row.seq - 1,
                        waited,
                        row.seq,
                    )
                self._apply_row(session, locker_id, link, row, _event_of(row), now)
                applied += 1

    def apply_held_back(self) -> None:
        """The periodic round: lockers this process holds events for whose wait is over,
        and now and then every locker (a process that held events may have died)."""
        now = time.monotonic()
        due = [locker for locker, at in list(self._held.items()) if at <= now]
        if now >= self._next_full_sweep:
            self._next_full_sweep = now + _FULL_SWEEP_S
            due = sorted(set(due) | set(self._lockers_with_held_events()))
        for locker_id in due:
            self.apply_ready(locker_id)
        for locker_id in list(self._views):
            self.reconcile_ready(locker_id)

    def _lockers_with_held_events(self) -> list[str]:
        held = (
            select(LockerEventRecord.id)
            .where(
                LockerEventRecord.locker_id == LockerLink.locker_id,
                LockerEventRecord.seq > LockerLink.last_seq,
            )
            .exists()
        )
        with self._session() as session:
            found = list(session.scalars(select(LockerLink.locker_id).where(held)))
            session.commit()
        return found

    def _hold(self, locker_id: str, seconds: float) -> None:
        due = time.monotonic() + seconds
        self._held[locker_id] = min(self._held.get(locker_id, due), due)

    def _apply_row(
        self,
        session: Session,
        locker_id: str,
        link: LockerLink,
        row: LockerEventRecord,
        event: LockerEvent,
        now: datetime,
    ) -> Ingested:
        """Apply a stored row inside the open transaction (which holds the link lock) and
        commit; a refused or ignored event is kept with the reason, in a new transaction."""
        if event.seq < link.last_seq:
            # Older than what was applied: it arrived after its successor had waited long
            # enough, or the locker's numbering restarted (a wiped controller). Applied as it
            # comes, the only order left.
            log.warning(
                "event %s from %s is late: seq %d after %d",
                row.event_id,
                locker_id,
                event.seq,
                link.last_seq,
            )
        link.last_seq = max(link.last_seq, event.seq)
        row.outcome = Ingested.applied.value
        try:
            at = min(event.ts, now)
            applied = apply_event(session, self._policy, locker_id, event, at, now)
        except Refused as err:
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
            # Handovers the event moved to another compartment (effects._rehome): the
            # locker must hear of their new place.
            moved = session.info.pop("resync", None)
            if moved and self.resync is not None:
                try:
                    self.resync(locker_id, sorted(moved))
                except LinkDown as err:  # the full sync on the locker's return carries it
                    log.warning("handovers %s not synced to %s now: %s", moved, locker_id, err)
            outcome = Ingested.applied if applied else Ingested.stored
            self._count(locker_id, event, outcome)
            return outcome
        # End this transaction before the next: on SQLite it holds the write lock.
        session.rollback()
        return self._settle(locker_id, event, now, why)

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
            outcome="pending",
        )

    def _settle(self, locker_id: str, event: LockerEvent, now: datetime, why: str) -> Ingested:
        """Keep an event that could not be applied, with the reason (the rollback took the
        row away if it arrived in that transaction, or left it pending if it was held)."""
        log.warning("event %s from %s not applied: %s", event.event_id, locker_id, why)
        with self._session() as session:
            link = self._lock_link(session, locker_id)
            row = session.scalar(
                select(LockerEventRecord).where(LockerEventRecord.event_id == str(event.event_id))
            )
            if row is None:
                row = self._row(locker_id, event, now)
                session.add(row)
                session.flush()
                _numbering_restart(locker_id, link, row)
            elif row.outcome != "pending":
                session.commit()
                self._count(locker_id, event, Ingested.duplicate)
                return Ingested.duplicate  # another process settled it meanwhile
            row.outcome = why[:300]
            link.last_seen_at = now
            link.last_seq = max(link.last_seq, event.seq)
            session.commit()
        outcome = Ingested.refused if why.startswith("refused") else Ingested.ignored
        self._count(locker_id, event, outcome)
        return outcome

    def _count(self, locker_id: str, event: LockerEvent, outcome: Ingested) -> None:
        """Metrics: one event taken in, and (unless a duplicate) its lag from the cabinet's
        clock to now, its row committed."""
        if self._metrics is None:
            return
        lag = None
        if outcome is not Ingested.duplicate:
            lag = (self._clock() - event.ts).total_seconds()
        self._metrics.event(locker_id, event.type.value, outcome.value, lag)

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
        outcome = store_reply(self._engine, locker_id, raw, self._clock())
        if outcome is not None:
            report = CabinetReport.from_result(CommandReply.from_bytes(raw).result)
            if report is not None:
                self._views[locker_id] = report
                self.reconcile_ready(locker_id)
        return outcome

    # --- reconciliation (mqtt/reconcile.py) ----------------------------------------------

    def reconcile_ready(self, locker_id: str) -> bool:
        """Compare the cabinet's last view with the cloud's once every event it reflects is
        applied; False while it waits."""
        report = self._views.get(locker_id)
        if report is None:
            return False
        with self._session() as session:
            link = self._lock_link(session, locker_id)
            found = reconcile.when_caught_up(
                session, locker_id, link.last_seq, report, self._clock()
            )
            session.commit()
        if found is None:
            return False
        self._views.pop(locker_id, None)
        return True
