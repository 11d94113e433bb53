"""Staff at the cabinet: staff number + TOTP opens a short staff session for door actions.

TOTP is checked offline against the secrets synced for this site (staff_credentials
command). A TOTP value is accepted once: the time step used is stored, so a code read over a
shoulder cannot be replayed within its 30-second window. Wrong logins count towards the same
cabinet lockout as wrong codes.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import pyotp

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
from locker_controller.store import Store
from xinbao.contract import EventType


@dataclass
class StaffSession:
    staff_no: str
    name: str
    expires: float


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
        self._store = store
        self._events = events
        self._doors = doors
        self._operations = operations
        self._lockout = lockout
        self._sessions: dict[str, StaffSession] = {}

    def login(self, staff_no: str, otp: str) -> str:
        try:
            self._lockout.check()
        except CodeRefused as err:
            raise StaffRefused("locked_out", f"retry after {err.retry_after} s") from None
        member = self._store.staff_member(staff_no)
        step = self._matching_step(member.totp_secret, otp) if member else None
        if member is None or step is None or step <= member.last_step:
            self._lockout.failed("staff_login_failed", staff_no=staff_no[:32])
            raise StaffRefused("bad_credentials", "staff number or one-time code is wrong")
        token = secrets.token_urlsafe(24)
        with self._store.transaction():
            self._store.set_staff_step(staff_no, step)
            self._lockout.succeeded()
            self._events.record(EventType.STAFF_LOGIN, None, staff_no=staff_no)
        self._sessions[token] = StaffSession(
            staff_no, member.name, time.monotonic() + self._session_s
        )
        return token

    @staticmethod
    def _matching_step(secret: str, otp: str) -> int | None:
        if not (isinstance(otp, str) and otp.isascii() and otp.isdigit() and len(otp) == 6):
            return None
        totp = pyotp.TOTP(secret)
        now = time.time()
        found = None
        for offset in (-1, 0, 1):  # one step of clock drift either way
            moment = now + offset * totp.interval
            if secrets.compare_digest(totp.at(moment), otp):
                found = int(moment // totp.interval)
        return found

    def logout(self, token: str) -> None:
        self._sessions.pop(token, None)

    def session(self, token: str) -> StaffSession:
        found = self._sessions.get(token)
        if found is None or found.expires < time.monotonic():
            self._sessions.pop(token, None)
            raise StaffRefused("no_session", "log in again")
        return found

    async def _open(
        self, session: StaffSession, number: int, purpose: Purpose, action: str
    ) -> UnlockOutcome:
        def accept() -> None:
            self._events.record(
                EventType.STAFF_ACTION,
                number,
                action=action,
                staff_no=session.staff_no,
                handover_id=purpose.handover_id,
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
        session = self.session(token)
        handover = self._store.handover(handover_id)
        if handover is None or handover.kind != "pickup" or handover.state != "reserved":
            raise StaffRefused("no_handover", f"no pickup {handover_id} waiting to be loaded")
        number = self._operations.free_compartment(handover.size, self._doors.in_service)
        if number is None:
            raise StaffRefused("no_free_compartment", f"size {handover.size or 'any'}")
        purpose = Purpose(STAFF_LOAD, handover_id, session.staff_no)
        return number, await self._open(session, number, purpose, "load")

    async def collect(self, token: str, number: int) -> UnlockOutcome:
        """Take dropped-off documents out of a compartment."""
        session = self.session(token)
        handover = self._handover_in(number, "dropoff", ("deposited",))
        purpose = Purpose(STAFF_COLLECT, handover, session.staff_no)
        return await self._open(session, number, purpose, "collect")

    async def recover(self, token: str, number: int) -> UnlockOutcome:
        """Take back a licence that was never collected."""
        session = self.session(token)
        handover = self._handover_in(number, "pickup", ("deposited", "overdue"))
        purpose = Purpose(STAFF_RECOVER, handover, session.staff_no)
        return await self._open(session, number, purpose, "recover")

    async def maintenance(self, token: str, number: int) -> UnlockOutcome:
        session = self.session(token)
        if number not in self._doors.doors:
            raise StaffRefused("no_compartment", f"no compartment {number}")
        purpose = Purpose(MAINTENANCE, None, session.staff_no)
        return await self._open(session, number, purpose, "maintenance")

    def _handover_in(self, number: int, kind: str, states: tuple[str, ...]) -> int:
        for h in self._store.live_handovers():
            if h.compartment == number and h.kind == kind and h.state in states:
                return h.handover_id
        raise StaffRefused("no_handover", f"compartment {number} holds no such item")
