"""Staff at the cabinet: staff number + staff pass opens a short staff session for door actions.

A staff pass (xinbao.staff_pass) is a 10-digit code for this cabinet and one shift, issued by
the cloud to a member after a full dashboard log-in (password + TOTP). The cabinet checks it
off line with a key derived from its own locker key; it holds no secret of the member's, so a
stolen cabinet lets no one log in anywhere else. Who may log in, their roles and the floor
below which their passes are void come with the staff sync (staff_credentials command); a
member the cloud drops (deactivated, moved to another site) is refused from that sync on.
Wrong log-ins count towards a lockout of that staff number alone
(locker_controller/lockout.py), never the keypad's. A session ends after ``staff_session_s``
without use.

What a member may do follows the roles synced (``ACTION_ROLES``): the cloud's roles are
admin, supervisor, staff and technician; a site may also give narrower ones. A refused action
is audited as code_refused "staff_not_permitted".
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from firmware_bridge.status import UnlockOutcome
from locker_controller.config import ControllerConfig
from locker_controller.doors import DoorWatcher
from locker_controller.errors import CodeRefused, CompartmentUnavailable, StaffRefused
from locker_controller.lockout import Lockout
from locker_controller.operations import (
    MAINTENANCE,
    STAFF_COLLECT,
    STAFF_LOAD,
    STAFF_RECOVER,
    Operations,
    Purpose,
)
from locker_controller.outbox import EventLog
from locker_controller.placement import Placement
from locker_controller.store import Handover, Store
from xinbao import staff_pass
from xinbao.contract import EventType

# Who may do what at the cabinet. Opening any door (maintenance) is not part of the daily
# load/collect work, so the cloud's plain "staff" role does not include it.
ACTION_ROLES: dict[str, frozenset[str]] = {
    "load": frozenset({"admin", "supervisor", "staff", "loader"}),
    "collect": frozenset({"admin", "supervisor", "staff", "collector"}),
    "recover": frozenset({"admin", "supervisor", "staff", "collector"}),
    "maintenance": frozenset({"admin", "supervisor", "technician"}),
}


def permitted_actions(roles: list[str]) -> list[str]:
    return [action for action, allowed in ACTION_ROLES.items() if allowed.intersection(roles)]


@dataclass
class StaffSession:
    staff_no: str
    name: str
    actions: list[str]
    expires: float
    idle_s: float = field(repr=False, default=300.0)

    def touch(self) -> None:
        self.expires = time.monotonic() + self.idle_s


class StaffDesk:
    def __init__(
        self,
        config: ControllerConfig,
        store: Store,
        events: EventLog,
        doors: DoorWatcher,
        operations: Operations,
        lockout: Lockout,
    ) -> None:
        self._session_s = config.staff_session_s
        self._locker_id = config.locker_id
        self._pass_key = staff_pass.derive_pass_key(config.locker_key)
        self._store = store
        self._events = events
        self._doors = doors
        self._operations = operations
        self._lockout = lockout
        self._placement = Placement(store, operations, doors)
        self._sessions: dict[str, StaffSession] = {}

    def login(self, staff_no: str, typed_pass: str) -> str:
        member = self._store.staff_member(staff_no)
        # Each staff number has its own lockout (unknown numbers share one): a guesser at the
        # keypad or at another staff number never locks this member out.
        counter = member.staff_no if member else None
        try:
            self._lockout.staff_check(counter)
        except CodeRefused as err:
            raise StaffRefused("locked_out", f"retry after {err.retry_after} s") from None
        if member is None or not self._pass_ok(member, typed_pass):
            self._lockout.staff_failed(counter, staff_no=staff_no[:32])
            raise StaffRefused("bad_credentials", "staff number or staff pass is wrong")
        actions = permitted_actions(member.roles)
        if not actions:
            # Who they are is proven (not a guess for the lockout), but they may do nothing.
            self._not_permitted(staff_no, "login")
            raise StaffRefused("not_permitted", f"roles {member.roles} allow no action here")
        token = secrets.token_urlsafe(24)
        with self._store.transaction():
            self._events.record(EventType.STAFF_LOGIN, None, staff_no=staff_no)
        session = StaffSession(staff_no, member.name, actions, 0.0, self._session_s)
        session.touch()
        self._sessions[token] = session
        return token

    def _pass_ok(self, member, typed_pass: str) -> bool:
        if not isinstance(typed_pass, str):
            return False
        counters = range(member.pass_floor, member.pass_floor + staff_pass.COUNTER_SPAN)
        return staff_pass.match_pass(
            self._pass_key, self._locker_id, member.staff_no, typed_pass, time.time(), counters
        )

    def _not_permitted(self, staff_no: str, action: str) -> None:
        self._events.record(
            EventType.CODE_REFUSED,
            None,
            reason="staff_not_permitted",
            staff_no=staff_no,
            action=action,
        )

    def logout(self, token: str) -> None:
        self._sessions.pop(token, None)

    def session(
        self, token: str, action: str | None = None, *, touch: bool = True
    ) -> StaffSession:
        """The live session of ``token``, allowed to ``action``; a door action restarts its
        idle clock (looking at the task lists does not: the panel refreshes them itself)."""
        found = self._sessions.get(token) if isinstance(token, str) else None
        if found is None or found.expires < time.monotonic():
            self._sessions.pop(token, None)
            raise StaffRefused("no_session", "log in again")
        if touch:
            found.touch()
        if action is not None and action not in found.actions:
            self._not_permitted(found.staff_no, action)
            raise StaffRefused("not_permitted", f"{found.staff_no} may not {action}")
        return found

    def tasks(self, token: str) -> dict[str, Any]:
        """What this member can do here now: licences to load, documents to collect,
        items to recover, and (maintenance) the compartments."""
        session = self.session(token, touch=False)
        now = datetime.now(UTC)
        live = self._store.live_handovers()
        found: dict[str, Any] = {
            "staff_no": session.staff_no,
            "name": session.name,
            "actions": session.actions,
            "idle_logout_s": self._session_s,
        }
        if "load" in session.actions:
            found["load"] = [
                _task(h) for h in live if h.kind == PICKUP_KIND and h.state == "reserved"
            ]
        if "collect" in session.actions:
            found["collect"] = [
                _task(h)
                for h in live
                if h.kind == DROPOFF_KIND and h.state in ("deposited", "held") and h.compartment
            ]
        if "recover" in session.actions:
            found["recover"] = [
                _task(h)
                for h in live
                if h.kind == PICKUP_KIND
                and h.compartment
                and (
                    h.state in ("overdue", "held") or (h.state == "deposited" and h.expired(now))
                )
            ]
        if "maintenance" in session.actions:
            found["compartments"] = [
                {
                    "number": c.number,
                    "size": c.size,
                    "occupied": c.occupied,
                    "open": self._doors.doors[c.number].open,
                    "in_service": self._doors.in_service(c.number),
                }
                for c in self._store.compartments()
                if c.number in self._doors.doors
            ]
        return found

    async def _open(
        self, session: StaffSession, number: int, purpose: Purpose, action: str
    ) -> UnlockOutcome:
        def accept() -> None:
            placed = {}
            if purpose.planned is not None:
                placed = {"planned": purpose.planned, "deviation": purpose.deviation}
            self._events.record(
                EventType.STAFF_ACTION,
                number,
                action=action,
                staff_no=session.staff_no,
                handover_id=purpose.handover_id,
                **placed,
            )

        try:
            result = await self._doors.open_door(
                number, purpose, accept, staff_no=session.staff_no, action=action
            )
        except CompartmentUnavailable as err:
            raise StaffRefused("out_of_service", str(err)) from None
        return result.outcome

    async def load(self, token: str, handover_id: int) -> tuple[int, UnlockOutcome]:
        """Open a free compartment of the right size for a pickup handover's licence."""
        session = self.session(token, "load")
        handover = self._store.handover(handover_id)
        if handover is None or handover.kind != "pickup" or handover.state != "reserved":
            raise StaffRefused("no_handover", f"no pickup {handover_id} waiting to be loaded")
        held = self._operations.held_for(handover_id)
        if held is not None:
            # Asked again before its door closed: the same door, never a second one.
            purpose = self._operations.get(held) or Purpose(STAFF_LOAD, handover_id)
            return held, await self._open(session, held, purpose, "load")
        choice = self._placement.choose(handover)
        if choice.number is None:
            key, why = self._placement.refusal(handover)
            self._events.record(
                EventType.CODE_REFUSED,
                handover.compartment,
                reason=key,
                handover_id=handover_id,
                staff_no=session.staff_no,
                detail=why,
            )
            raise StaffRefused(key, why)
        purpose = Purpose(STAFF_LOAD, handover_id, session.staff_no)
        if choice.deviated:
            # The cloud's compartment cannot be used here (its board is silent, its door
            # jammed, something is inside): the rule's pick, reported with the deposit.
            purpose.planned, purpose.deviation = choice.planned, choice.reason
        return choice.number, await self._open(session, choice.number, purpose, "load")

    async def collect(self, token: str, number: int) -> UnlockOutcome:
        """Take dropped-off documents out of a compartment."""
        session = self.session(token, "collect")
        handover = self._handover_in(number, "dropoff", ("deposited", "held"))
        purpose = Purpose(STAFF_COLLECT, handover, session.staff_no)
        return await self._open(session, number, purpose, "collect")

    async def recover(self, token: str, number: int) -> UnlockOutcome:
        """Take back a licence that was never collected."""
        session = self.session(token, "recover")
        handover = self._handover_in(number, "pickup", ("deposited", "overdue", "held"))
        purpose = Purpose(STAFF_RECOVER, handover, session.staff_no)
        return await self._open(session, number, purpose, "recover")

    async def maintenance(self, token: str, number: int) -> UnlockOutcome:
        session = self.session(token, "maintenance")
        if number not in self._doors.doors:
            raise StaffRefused("no_compartment", f"no compartment {number}")
        purpose = Purpose(MAINTENANCE, None, session.staff_no)
        return await self._open(session, number, purpose, "maintenance")

    def _handover_in(self, number: int, kind: str, states: tuple[str, ...]) -> int:
        for h in self._store.live_handovers():
            if h.compartment == number and h.kind == kind and h.state in states:
                return h.handover_id
        raise StaffRefused("no_handover", f"compartment {number} holds no such item")


PICKUP_KIND, DROPOFF_KIND = "pickup", "dropoff"


def _task(h: Handover) -> dict[str, Any]:
    return {
        "handover_id": h.handover_id,
        "record_ref": h.record_ref,
        "compartment": h.compartment,
        "size": h.size,
        "state": h.state,
        "expires_at": h.expires_at.isoformat() if h.expires_at else None,
    }
