"""Commands to lockers: signed, recorded, published, and followed to an outcome.

Every command is recorded in ``locker_command`` (status ``sent``) before it is published, so
whichever API process receives the reply can match it (cloud_api.mqtt.ingest). A command
that nobody answers within XINBAO_MQTT_COMMAND_TIMEOUT_SECONDS is marked ``timeout`` by
whichever process sweeps first (a conditional UPDATE: processes never fight over it); a late
reply still replaces ``timeout`` with what the locker says.

Remote opens and config changes wait for their outcome, because staff are looking at the
screen; reservation syncs and staff credentials are published and left to the sweep. What
the locker does not get now it gets in the full sync when it next comes on line.
"""

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine, select, update
from sqlmodel import Session

from cloud_api.core.config import Settings
from cloud_api.models.monitoring import LockerCommand, LockerLink
from cloud_api.models.remote_open import RemoteOpenRequest
from cloud_api.models.staff import Staff
from cloud_api.mqtt import commands, staff_sync
from cloud_api.mqtt.errors import LinkDown
from cloud_api.mqtt.ingest import events_mark
from cloud_api.services import audit
from xinbao.contract import (
    Command,
    CommandType,
    ConfigPayload,
    LiftLockoutPayload,
    PingPayload,
    StaffCredentials,
    UnlockPayload,
)

log = logging.getLogger(__name__)
FULL_SYNC = "full_sync"  # noted on a full sync's command row (until its reply replaces it)

# Publishes one command (QoS 1, never retained) on a locker's commands topic; LinkDown if
# the broker connection cannot take it.
Publish = Callable[[str, bytes], None]


def _looked_at_since(since: datetime):
    """A ping or a sync (whose reply carries the view) went to the locker since ``since``."""
    return (
        select(LockerCommand.id)
        .where(
            LockerCommand.locker_id == LockerLink.locker_id,
            LockerCommand.type.in_((CommandType.PING.value, CommandType.SYNC_RESERVATIONS.value)),
            LockerCommand.issued_at >= since,
        )
        .exists()
    )


class CommandSender:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        publish: Publish,
        clock: Callable[[], datetime],
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._publish = publish
        self._clock = clock
        self._lock = threading.Lock()
        self._waiters: dict[str, threading.Event] = {}
        # locker -> (when, request_id) of the full sync last sent for a lost sync
        self._resynced: dict[str, tuple[float, str]] = {}
        self._resync_due: set[str] = set()  # lost syncs waiting for their full sync

    @property
    def timeout_s(self) -> float:
        return self._settings.mqtt_command_timeout_seconds

    # --- sending ------------------------------------------------------------------------

    def send(
        self,
        locker_id: str,
        type_: CommandType,
        payload,
        *,
        ttl: timedelta | None = None,
        remote_open_id: int | None = None,
        request_id: uuid.UUID | None = None,
        note: dict | None = None,
    ) -> str:
        """Sign, record and publish one command; its request_id."""
        with Session(self._engine, expire_on_commit=False) as session:
            command = self.prepare(
                session,
                locker_id,
                type_,
                payload,
                ttl=ttl,
                note=note,
                request_id=request_id,
                remote_open_id=remote_open_id,
            )
            session.commit()
        self.publish(locker_id, command)
        return str(command.request_id)

    def prepare(
        self,
        session: Session,
        locker_id: str,
        type_: CommandType,
        payload,
        *,
        ttl: timedelta | None = None,
        note: dict | None = None,
        request_id: uuid.UUID | None = None,
        remote_open_id: int | None = None,
    ) -> Command:
        """Sign a command and add its ``locker_command`` row to the caller's transaction
        (``note``: what the cloud wants remembered beside the reply, in ``result``)."""
        ttl = ttl or timedelta(seconds=self._settings.mqtt_command_ttl_seconds)
        command = commands.signed(
            self._settings.master_key, locker_id, type_, payload, ttl, self._clock(), request_id
        )
        row = commands.record(session, locker_id, command, remote_open_id)
        row.result = note
        return command

    def publish(self, locker_id: str, command: Command) -> None:
        """Publish a recorded command; a refused publish marks it failed and raises LinkDown."""
        try:
            self._publish(locker_id, command.to_bytes())
        except LinkDown as err:
            self._finish(str(command.request_id), "failed", f"not sent: {err}")
            raise

    def sync_handovers(self, locker_id: str, handover_ids: list[int]) -> str | None:
        """Upserts and revocations for these handovers (after a create, cancel, resend, load)."""
        with Session(self._engine) as session:
            payload = commands.sync_payload(
                session,
                locker_id,
                self._settings.code_digits,
                handover_ids,
                self._settings.master_key,
            )
        if not payload.upserts and not payload.revocations:
            return None
        return self.send(locker_id, CommandType.SYNC_RESERVATIONS, payload)

    def sync_locker(self, locker_id: str) -> str:
        """Everything a locker coming back on line must know: all live reservations (full),
        what the cloud holds of its events (the locker sends again what a broker lost) and
        the staff credentials."""
        with Session(self._engine) as session:
            reservations = commands.sync_payload(
                session, locker_id, self._settings.code_digits, master_key=self._settings.master_key
            )
            staff = commands.staff_payload(session, commands.locker_site(session, locker_id))
            mark = events_mark(session, locker_id)
            session.commit()
        reservations = reservations.model_copy(update={"events_upto": mark})
        request_id = self.send(
            locker_id, CommandType.SYNC_RESERVATIONS, reservations, note={FULL_SYNC: True}
        )
        self.push_staff(locker_id, staff)
        log.info(
            "full sync to %s: %d reservations, %d staff, events held up to seq %d",
            locker_id,
            len(reservations.upserts),
            len(staff.staff),
            mark.seq,
        )
        return request_id

    def push_staff(self, locker_id: str, staff: StaffCredentials | None = None) -> str:
        """Who may log in at this locker as it is now, noted by digest (see staff_sync)."""
        if staff is None:
            with Session(self._engine) as session:
                staff = commands.staff_payload(session, commands.locker_site(session, locker_id))
        return self.send(
            locker_id,
            CommandType.STAFF_CREDENTIALS,
            staff,
            note={staff_sync.DIGEST_KEY: staff_sync.digest(staff)},
        )

    def push_changed_staff(self) -> list[str]:
        """Send the staff list to on-line lockers that have an older one (periodic)."""

        def prepare(session, locker_id, staff, note) -> Command:
            return self.prepare(session, locker_id, CommandType.STAFF_CREDENTIALS, staff, note=note)

        def publish(locker_id: str, command: Command) -> None:
            with contextlib.suppress(LinkDown):  # marked failed: the next round sends it again
                self.publish(locker_id, command)

        pushed = staff_sync.push_changed(self._engine, prepare, publish)
        if pushed:
            log.info("staff credentials changed: sent to %d on-line lockers", len(pushed))
        return pushed

    def ask_views(self, older_than: timedelta) -> list[str]:
        """Ping every on-line locker that got no ping nor full sync for ``older_than``: the
        reply carries its view and the cloud reconciles (periodic). Every API worker runs
        this round, at about the same moment (they start together): each locker is decided
        and its ping recorded under its ``locker_link`` row lock, so the worker that comes
        second finds the first one's ping and sends none."""
        since = self._clock() - older_than
        with Session(self._engine) as session:
            due = list(
                session.scalars(
                    select(LockerLink.locker_id)
                    .where(LockerLink.online.is_(True), ~_looked_at_since(since))
                    .order_by(LockerLink.locker_id)
                )
            )
            session.commit()  # end the read: on SQLite it holds the write lock
        asked = []
        for locker_id in due:
            command = None
            with Session(self._engine, expire_on_commit=False) as session:
                link = session.get(LockerLink, locker_id, with_for_update=True)
                still_due = session.scalar(
                    select(LockerLink.locker_id).where(
                        LockerLink.locker_id == locker_id, ~_looked_at_since(since)
                    )
                )
                if link is not None and link.online and still_due is not None:
                    command = self.prepare(session, locker_id, CommandType.PING, PingPayload())
                session.commit()
            if command is None:
                continue
            with contextlib.suppress(LinkDown):  # the full sync on its return looks anyway
                self.publish(locker_id, command)
                asked.append(str(command.request_id))
        if asked:
            log.info("asked %d on-line lockers for their view", len(asked))
        return asked

    def configure(
        self, locker_id: str, settings: dict, actor: str, timeout: float | None = None
    ) -> LockerCommand:
        """Send a ``config`` command (already checked against the contract), audited, and wait
        for the locker's answer; the command row with its outcome."""
        request_id = uuid.uuid4()
        with Session(self._engine) as session:
            audit.append(
                session,
                actor,
                "locker.config",
                f"locker:{locker_id}",
                {"settings": settings, "request_id": str(request_id)},
            )
            session.commit()
        try:
            self.send(
                locker_id,
                CommandType.CONFIG,
                ConfigPayload(settings=settings),
                request_id=request_id,
            )
        except LinkDown:
            return self.command(str(request_id))
        return self.wait_reply(str(request_id), timeout or self.timeout_s)

    def lift_lockout(
        self, locker_id: str, actor: str, reason: str, timeout: float | None = None
    ) -> LockerCommand:
        """Send a ``lift_lockout`` command, audited, and wait for the locker's answer (which
        lockouts it lifted); the command row with its outcome."""
        request_id = uuid.uuid4()
        with Session(self._engine) as session:
            audit.append(
                session,
                actor,
                "locker.lockout_lift",
                f"locker:{locker_id}",
                {"reason": reason, "request_id": str(request_id)},
            )
            session.commit()
        try:
            self.send(
                locker_id,
                CommandType.LIFT_LOCKOUT,
                LiftLockoutPayload(by=actor[:100], reason=reason),
                request_id=request_id,
            )
        except LinkDown:
            return self.command(str(request_id))
        return self.wait_reply(str(request_id), timeout or self.timeout_s)

    # --- following replies --------------------------------------------------------------

    def wake(self, request_id: str) -> None:
        """A reply for this request was stored (by this process)."""
        with self._lock:
            waiter = self._waiters.get(request_id)
        if waiter is not None:
            waiter.set()

    def command(self, request_id: str) -> LockerCommand | None:
        with Session(self._engine, expire_on_commit=False) as session:
            found = session.scalar(
                select(LockerCommand).where(LockerCommand.request_id == request_id)
            )
            session.commit()  # end the read: on SQLite it holds the write lock
        return found

    def wait_reply(self, request_id: str, timeout: float) -> LockerCommand:
        """The command row once answered, or marked ``timeout`` after ``timeout`` seconds.

        The reply may reach another API process (shared subscription): the database is the
        meeting point, the local event only makes the common case quick."""
        waiter = threading.Event()
        with self._lock:
            self._waiters[request_id] = waiter
        deadline = time.monotonic() + timeout
        try:
            while True:
                found = self.command(request_id)
                if found.status != "sent":
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    self._time_out([found])
                    return self.command(request_id)
                waiter.wait(min(left, 0.2))
                waiter.clear()
        finally:
            with self._lock:
                self._waiters.pop(request_id, None)

    def expire_unanswered(self) -> int:
        """Mark ``timeout`` every command still ``sent`` longer than the command timeout (any
        process's: the one that sent it may have died)."""
        due = self._clock() - timedelta(seconds=self.timeout_s)
        with Session(self._engine, expire_on_commit=False) as session:
            overdue = list(
                session.scalars(
                    select(LockerCommand)
                    .where(LockerCommand.status == "sent", LockerCommand.issued_at < due)
                    .order_by(LockerCommand.id)
                    .limit(500)
                )
            )
            session.commit()
        moved = self._time_out(overdue) if overdue else 0
        if self._resync_due:
            self._sync_again(set())  # lost syncs whose full sync had to wait
        return moved

    def _time_out(self, overdue: list[LockerCommand]) -> int:
        now = self._clock()
        moved = 0
        unsynced: set[str] = set()
        with Session(self._engine, expire_on_commit=False) as session:
            for command in overdue:
                # Conditional: a reply (or another process's sweep) may have come first.
                if not session.execute(
                    update(LockerCommand)
                    .where(LockerCommand.id == command.id, LockerCommand.status == "sent")
                    .values(status="timeout", error="no reply in time")
                ).rowcount:
                    continue
                moved += 1
                log.warning(
                    "%s command %s to %s: no reply in time",
                    command.type,
                    command.request_id,
                    command.locker_id,
                )
                if command.remote_open_id is not None:
                    self._remote_open_timed_out(session, command, now)
                # (A lost staff list is sent again by the staff round; a lost full sync by
                # the locker's next presence.)
                full = isinstance(command.result, dict) and command.result.get(FULL_SYNC)
                if command.type == CommandType.SYNC_RESERVATIONS.value and not full:
                    unsynced.add(command.locker_id)
            session.commit()
        self._sync_again(unsynced)
        return moved

    def _sync_again(self, lockers: set[str]) -> None:
        """A sync nobody answered may never have arrived (published while the locker's
        session was being made again after a broker restart, say): an on-line locker gets a
        full sync, so a code the cloud issued is never missing at the cabinet until its
        next reconnect. (An off-line one gets it on its return anyway.) A locker that left
        the previous such full sync unanswered gets the next one only a minute later, so a
        locker that answers nothing is not flooded; the lost sync waits for it meanwhile,
        it is never dropped."""
        now = time.monotonic()
        window = max(60.0, 10 * self.timeout_s)
        for locker_id in sorted(lockers | self._resync_due):
            self._resync_due.discard(locker_id)
            with Session(self._engine) as session:
                link = session.get(LockerLink, locker_id)
                online = bool(link and link.online)
                last = self._resynced.get(locker_id)
                if last is not None and now - last[0] < window:
                    previous = session.scalar(
                        select(LockerCommand.status).where(
                            LockerCommand.request_id == last[1]
                        )
                    )
                    if previous in (None, "sent", "timeout"):
                        self._resync_due.add(locker_id)  # not answered: wait out the window
                        continue
            if not online:
                continue
            log.warning("%s: a sync went unanswered: sending a full sync", locker_id)
            with contextlib.suppress(LinkDown):
                self._resynced[locker_id] = (now, self.sync_locker(locker_id))

    def _remote_open_timed_out(self, session: Session, command: LockerCommand, now) -> None:
        moved = session.execute(
            update(RemoteOpenRequest)
            .where(
                RemoteOpenRequest.id == command.remote_open_id,
                RemoteOpenRequest.status == "sent",
            )
            .values(status="timeout", finished_at=now, detail="no reply in time")
        ).rowcount
        if moved:
            audit.append(
                session,
                "system",
                "door.remote_open",
                f"locker:{command.locker_id}",
                {
                    "request": command.remote_open_id,
                    "outcome": "timeout",
                    "request_id": command.request_id,
                },
            )

    def _finish(self, request_id: str, status: str, error: str) -> None:
        with Session(self._engine) as session:
            session.execute(
                update(LockerCommand)
                .where(LockerCommand.request_id == request_id, LockerCommand.status == "sent")
                .values(status=status, error=error[:300])
            )
            session.commit()

    # --- remote open --------------------------------------------------------------------

    def remote_open(self, remote_open_id: int, timeout: float | None = None) -> None:
        """Send the unlock of a recorded remote-open request and wait for its outcome, which
        lands on the request row (opened / jammed / no_response / rejected / timeout)."""
        timeout = timeout or self.timeout_s
        request_id = uuid.uuid4()
        with Session(self._engine, expire_on_commit=False) as session:
            request = session.get(RemoteOpenRequest, remote_open_id)
            staff = session.get(Staff, request.staff_id)
            # The row names the request_id before anything is sent: a reply can never
            # arrive for a command the database does not know.
            request.status = "sent"
            request.request_id = str(request_id)
            session.commit()
        payload = UnlockPayload(
            compartment=request.compartment_number,
            reason=request.reason,
            staff_no=staff.username[:32] if staff else None,
        )
        try:
            self.send(
                request.locker_id,
                CommandType.UNLOCK,
                payload,
                # A remote open that arrives long after staff gave up would surprise everyone.
                ttl=timedelta(seconds=max(timeout, 10)),
                remote_open_id=remote_open_id,
                request_id=request_id,
            )
        except LinkDown as err:
            self._finish_unsent(remote_open_id, str(err))
            return
        self.wait_reply(str(request_id), timeout)

    def _finish_unsent(self, remote_open_id: int, why: str) -> None:
        with Session(self._engine) as session:
            session.execute(
                update(RemoteOpenRequest)
                .where(RemoteOpenRequest.id == remote_open_id)
                .values(
                    status="rejected", detail=f"not sent: {why}"[:300], finished_at=self._clock()
                )
            )
            session.commit()
