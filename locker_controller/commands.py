"""Commands from the cloud: verified, never replayed, each answered with a reply.

A command is acted on only when it is signed with this locker's key, not expired, not
retained and its request_id was never seen (xinbao.contract.verify_command does the first
three; the seen ids live in SQLite so a replay after a restart is refused too).

Retained is judged twice. The broker's retain flag, and, because a broker or bridge may clear
that flag on delivery, the command's own age: the controller subscribes with a clean session,
so the only message a broker can hand it that was published before the subscription is the
topic's retained one, and a broker hands that over first, at once. So the first command after
each subscription is refused as retained when it was issued more than RETAINED_AGE_S before
the subscription. (An honest command refused this way, the cabinet's clock far ahead of the
cloud's, costs one round: the cloud's full sync is repeated when ``online`` is announced
again.) Anything
malformed or hostile is logged, audited as ``command_rejected`` and dropped; past
REJECTIONS_RECORDED a minute, rejections are only counted (RejectionGate). Replies go
through the outbox (EventLog.reply), in the transaction of the command's effect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from locker_controller.config import ControllerConfig
from locker_controller.doors import DoorWatcher
from locker_controller.errors import CompartmentUnavailable
from locker_controller.operations import MAINTENANCE, Operations, Purpose
from locker_controller.outbox import EventLog
from locker_controller.store import Handover, StaffMember, Store
from xinbao.contract import (
    CabinetReport,
    CommandRejected,
    CommandReply,
    CommandType,
    CompartmentReport,
    ConfigPayload,
    EventType,
    ReservationSync,
    StaffCredentials,
    UnlockPayload,
    check_runtime_settings,
    verify_command,
)

log = logging.getLogger(__name__)

SEEN_REQUESTS_KEPT = timedelta(days=7)
# Local progress of a handover; a sync never moves a handover backwards (the cloud may not
# have our latest event yet).
HELD = "held"  # see store.LIVE_STATES
_STATE_RANK = {
    "reserved": 0,
    "deposited": 1,
    HELD: 1,  # the cloud listing it again (it followed the deposit) makes it deposited
    "overdue": 2,
    "collected": 3,
    "recovered": 3,
}
# States in which the handover's item is in the cabinet, in the compartment the cabinet knows.
_ITEM_INSIDE = ("deposited", "overdue", HELD)
# A flood of hostile messages must not grow the outbox without limit: the first few
# rejections in a window are recorded one by one (and answered), the rest only counted and
# reported as one command_rejected "flood" event when the window ends.
REJECTIONS_RECORDED = 20
REJECTION_WINDOW_S = 60.0
# The first command after a subscription, issued this long before it, is a retained one.
RETAINED_AGE_S = 30.0


class RejectionGate:
    def __init__(
        self,
        limit: int = REJECTIONS_RECORDED,
        window_s: float = REJECTION_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._window_end: float | None = None
        self._recorded = 0
        self._suppressed: Counter[str] = Counter()

    @property
    def window_end(self) -> float | None:
        return self._window_end

    def admit(self, reason: str) -> tuple[bool, dict[str, Any] | None]:
        """(record this one?, summary of the window that just ended, if anything was held)."""
        summary = self.close_window() if self._ended() else None
        if self._window_end is None:
            self._window_end = self._clock() + self.window_s
        if self._recorded < self.limit:
            self._recorded += 1
            return True, summary
        self._suppressed[reason] += 1
        return False, summary

    def _ended(self) -> bool:
        return self._window_end is not None and self._clock() >= self._window_end

    def close_window(self) -> dict[str, Any] | None:
        """End the current window; the flood summary if rejections were held back."""
        suppressed, self._suppressed = self._suppressed, Counter()
        self._window_end, self._recorded = None, 0
        if not suppressed:
            return None
        return {
            "reason": "flood",
            "suppressed": sum(suppressed.values()),
            "reasons": dict(sorted(suppressed.items())),
            "window_s": self.window_s,
        }


class CommandDesk:
    def __init__(
        self,
        config: ControllerConfig,
        store: Store,
        events: EventLog,
        doors: DoorWatcher,
        operations: Operations,
        apply_setting: Callable[[str, Any], None],
    ) -> None:
        self._key = config.locker_key
        self._store = store
        self._events = events
        self._doors = doors
        self._operations = operations
        self._apply_setting = apply_setting
        self._tasks: set[asyncio.Task[None]] = set()
        self.gate = RejectionGate()
        self.cloud_spoke: Callable[[], None] = lambda: None
        self.synced: Callable[[], None] = lambda: None  # new codes: the keypad digests them
        # Staff lifted the lockouts from the dashboard (the Controller wires its Lockout).
        self.lift_lockout: Callable[[str], dict[str, Any]] = lambda by: {"lifted": []}
        self._summary_timer: asyncio.TimerHandle | None = None
        # When we last subscribed to our commands topic, until the first message after it.
        self._subscribed_at: datetime | None = None

    def subscribed(self) -> None:
        """The link subscribed to our commands topic (each (re)connect): the next message
        may be the topic's retained one."""
        self._subscribed_at = datetime.now(UTC)

    def received(self, raw: bytes, retained: bool) -> None:
        """Entry point for every message on our commands topic (called on the loop)."""
        subscribed_at, self._subscribed_at = self._subscribed_at, None
        try:
            command = verify_command(self._key, raw, retained=retained)
            rid = str(command.request_id)
            if subscribed_at is not None and command.issued_at < subscribed_at - timedelta(
                seconds=RETAINED_AGE_S
            ):
                raise CommandRejected(
                    "retained",
                    f"first command after subscribing, issued at {command.issued_at}: a "
                    "retained one whose flag the broker cleared",
                    rid,
                )
        except CommandRejected as err:
            self._rejected(err)
            return
        if command.type is CommandType.UNLOCK:
            if not self._store.remember_request(rid):
                self._rejected(CommandRejected("replayed", "request_id seen before", rid))
                return
            self.cloud_spoke()
            task = asyncio.get_running_loop().create_task(self._unlock_and_answer(command))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        try:
            # The command's effect, its request_id and its reply commit together: a crash
            # leaves either nothing (the cloud sends it again) or all three.
            with self._store.transaction():
                if not self._store.remember_request(rid):
                    raise CommandRejected("replayed", "request_id seen before", rid)
                self._answer(rid, result=self._apply(command))
        except CommandRejected as err:
            self._rejected(err)
            return
        except ValueError as err:
            with self._store.transaction():
                self._store.remember_request(rid)
                self._answer(rid, error=f"invalid: {err}")
        # Signed with our key, fresh and new: the cloud hears this connection.
        self.cloud_spoke()

    def _rejected(self, err: CommandRejected) -> None:
        log.warning("command rejected: %s", err)
        record, summary = self.gate.admit(err.reason)
        if summary is not None:
            self._events.record(EventType.COMMAND_REJECTED, None, **summary)
        if record:
            self._events.record(
                EventType.COMMAND_REJECTED, None, reason=err.reason, request_id=err.request_id
            )
            self._answer(err.request_id, error=err.reason)
        elif self._summary_timer is None and self.gate.window_end is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, self.gate.window_end - time.monotonic())
            self._summary_timer = loop.call_later(delay, self._flood_over)

    def _flood_over(self) -> None:
        self._summary_timer = None
        summary = self.gate.close_window()
        if summary is not None:
            self._events.record(EventType.COMMAND_REJECTED, None, **summary)

    def _answer(
        self, request_id: str | None, result: dict[str, Any] | None = None, error: str | None = None
    ) -> None:
        try:
            rid = uuid.UUID(str(request_id))
        except ValueError:
            return  # nothing to address a reply to
        self._events.reply(
            CommandReply(
                request_id=rid,
                ok=error is None,
                result=result if error is None else None,
                error=error,
            )
        )

    def _apply(self, command) -> dict[str, Any]:
        payload = command.parsed_payload()
        if command.type is CommandType.SYNC_RESERVATIONS:
            result = self._sync(payload)
            self.synced()
            return result
        if command.type is CommandType.STAFF_CREDENTIALS:
            return self._staff(payload)
        if command.type is CommandType.CONFIG:
            return self._config(payload)
        if command.type is CommandType.LIFT_LOCKOUT:
            log.warning("lockouts lifted by %s: %s", payload.by, payload.reason[:200])
            return self.lift_lockout(payload.by)
        # A ping (the cloud's periodic look, cloud_api/mqtt/sender.py) carries what this
        # cabinet sees, for the cloud to reconcile between full syncs.
        if self._doors is None:
            return {"pong": True}
        return {"pong": True, "cabinet": self._cabinet_report().model_dump(mode="json")}

    async def _unlock_and_answer(self, command) -> None:
        rid = str(command.request_id)
        try:
            result = await self._unlock(command.parsed_payload(), rid)
        except CompartmentUnavailable as err:
            self._answer(rid, error=f"unavailable: {err}")
        except ValueError as err:
            self._answer(rid, error=f"invalid: {err}")
        else:
            self._answer(rid, result=result)

    async def _unlock(self, payload: UnlockPayload, request_id: str) -> dict[str, Any]:
        number = payload.compartment
        if number not in self._doors.doors:
            raise ValueError(f"no compartment {number}")
        purpose = Purpose(MAINTENANCE, None, payload.staff_no)
        result = await self._doors.open_door(
            number,
            purpose,
            remote=True,
            reason=payload.reason,
            staff_no=payload.staff_no,
            request_id=request_id,
        )
        return {"compartment": number, "outcome": result.outcome.value}

    def _sync(self, payload: ReservationSync) -> dict[str, Any]:
        result: dict[str, Any] = {}
        with self._store.transaction():
            if payload.full and payload.events_upto is not None:
                dropped, again = self._store.confirm_events(payload.events_upto)
                result["events"] = {"confirmed": dropped, "sent_again": again}
                if again:
                    log.warning(
                        "the cloud holds our events up to seq %d: sending %d acknowledged "
                        "events again (a broker lost them)",
                        payload.events_upto.seq,
                        again,
                    )
            # An item this cabinet holds is never forgotten because the cloud ended its
            # handover (cancelled while we were off line, say, and the deposit event not yet
            # applied there): its code stops ("held"), the door stays the item's until staff
            # take it out or the cloud, following the deposit, lists it again.
            holding = {
                h.handover_id: h.compartment
                for h in self._store.live_handovers()
                if h.state in _ITEM_INSIDE and h.compartment is not None
            }
            ended = [r.handover_id for r in payload.revocations]
            if payload.full:
                wanted = {u.handover_id for u in payload.upserts}
                self._store.delete_handovers_except(wanted | set(holding))
                ended += [hid for hid in holding if hid not in wanted]
            held = sorted({hid for hid in ended if hid in holding})
            for hid in ended:
                if hid in holding:
                    self._store.set_handover_state(hid, HELD)
                else:
                    self._store.delete_handover(hid)
            if held:
                log.warning("the cloud ended handovers whose items are inside here: %s", held)
                result["items_kept"] = [
                    {"handover_id": hid, "compartment": holding[hid]} for hid in held
                ]
            kept = []
            for u in payload.upserts:
                old = self._store.handover(u.handover_id)
                state, compartment = u.state, u.compartment
                if old is not None:
                    if _STATE_RANK.get(old.state, 0) > _STATE_RANK.get(state, 0):
                        state = old.state
                    if old.state in _ITEM_INSIDE and old.compartment is not None:
                        # The item is where this cabinet put it: no sync moves it (a resend
                        # or a stale cloud view naming another door would open that door).
                        if compartment is not None and compartment != old.compartment:
                            kept.append(
                                {
                                    "handover_id": u.handover_id,
                                    "cloud": compartment,
                                    "cabinet": old.compartment,
                                }
                            )
                        compartment = old.compartment
                    elif compartment is None:
                        compartment = old.compartment
                self._store.upsert_handover(
                    Handover(
                        u.handover_id,
                        u.kind,
                        compartment,
                        u.size,
                        u.counter,
                        u.digits,
                        u.expires_at.astimezone(UTC) if u.expires_at else None,
                        state,
                        u.record_ref,
                        u.mobile_digest,
                    )
                )
            if kept:
                log.warning("sync names other compartments for items held here: %s", kept)
                result["compartments_kept"] = kept
            if payload.full and self._doors is not None:
                # What this cabinet sees, for the cloud to compare with its own view.
                result["cabinet"] = self._cabinet_report().model_dump(mode="json")
        return {"upserted": len(payload.upserts), "revoked": len(payload.revocations), **result}

    def _cabinet_report(self) -> CabinetReport:
        inside = {
            h.compartment: h.handover_id
            for h in self._store.live_handovers()
            if h.compartment is not None and h.state in _ITEM_INSIDE
        }
        found = []
        for c in self._store.compartments():
            door = self._doors.doors.get(c.number)
            found.append(
                CompartmentReport(
                    number=c.number,
                    door_open=door.open if door is not None else None,
                    occupied=c.occupied,
                    sensed=door.occupied if door is not None else None,
                    holds=inside.get(c.number),
                    board_up=self._doors.in_service(c.number),
                )
            )
        return CabinetReport(seq=self._store.last_event_seq(), compartments=found)

    def _staff(self, payload: StaffCredentials) -> dict[str, Any]:
        count = self._store.replace_staff(
            StaffMember(s.staff_no, s.name, list(s.roles), s.pass_floor) for s in payload.staff
        )
        return {"staff": count}

    def _config(self, payload: ConfigPayload) -> dict[str, Any]:
        # The cloud checked them before sending; checked again, a locker trusts no one.
        checked = check_runtime_settings(payload.settings)  # ContractError is a ValueError
        for name, value in checked.items():
            self._apply_setting(name, value)
        saved = json.loads(self._store.get_meta("runtime_settings", "{}") or "{}")
        saved.update(checked)
        self._store.set_meta("runtime_settings", json.dumps(saved))
        return {"applied": checked}

    def prune(self) -> None:
        self._store.forget_requests_before(datetime.now(UTC) - SEEN_REQUESTS_KEPT)
        if gone := self._store.prune_acked():
            log.info("forgot %d acknowledged events the cloud never confirmed", gone)

    async def drain(self) -> None:
        if self._summary_timer is not None:
            self._summary_timer.cancel()
            self._flood_over()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
