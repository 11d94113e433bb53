"""The cabinet's brute-force guard: the shared state machine (xinbao/lockout.py) kept in
SQLite, with the events it causes.

Two kinds of counters: one for the keypad (the cabinet cannot tell applicants apart) and one
per staff number for staff log-ins, so a guesser at the keypad never locks staff out and a
guesser at one staff number never locks out another. Unknown staff numbers share one counter.

What goes to the cloud: each checked wrong guess (``code_refused``, at most ``threshold`` per
lockout), the start of each lockout (``lockout``, with ``alarm`` from the second level on)
and one ``lockout_ended`` per lockout window with the number of guesses refused unchecked in
it. Refusals during a lockout are counted in memory, not stored one by one: a keypad flood
writes O(1) rows per lockout window (a power cut loses the count of the window it cut).
State is kept on wall time, so a lockout survives a restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace

from locker_controller.config import ControllerConfig
from locker_controller.errors import CodeRefused
from locker_controller.outbox import EventLog
from locker_controller.store import Store
from xinbao import lockout as machine
from xinbao.contract import EventType
from xinbao.lockout import LockoutPolicy, LockoutState

KEYPAD = "keypad"
UNKNOWN_STAFF = "?"
_PREFIX = "lockout:"


class Lockout:
    def __init__(
        self,
        config: ControllerConfig,
        store: Store,
        events: EventLog,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = LockoutPolicy(
            threshold=config.lockout_threshold,
            base_s=config.lockout_base_s,
            max_s=config.lockout_max_s,
            forgive_s=config.lockout_forgive_s,
            level_decay_s=config.lockout_level_decay_s,
        )
        self._store = store
        self._events = events
        self.clock = clock
        self._states: dict[str, LockoutState] = {}

    @property
    def threshold(self) -> int:
        return self.policy.threshold

    @threshold.setter
    def threshold(self, value: int) -> None:
        self.policy = replace(self.policy, threshold=int(value))

    # --- state ---------------------------------------------------------------------------

    def _state(self, name: str) -> LockoutState:
        found = self._states.get(name)
        if found is None:
            raw = self._store.get_meta(_PREFIX + name)
            if raw is None and name == KEYPAD:
                found = self._legacy()
            else:
                try:
                    found = LockoutState.from_dict(json.loads(raw or "{}"))
                except ValueError:
                    found = LockoutState()
            self._states[name] = found
        return found

    def _legacy(self) -> LockoutState:
        """The keypad state as controllers before xinbao/lockout.py kept it."""
        old = {k: self._store.get_meta(f"lockout:{k}") for k in ("failures", "level", "until")}
        try:
            values = {k: float(v) for k, v in old.items() if v}
        except ValueError:
            values = {}
        until = values.get("until", 0.0)
        return LockoutState.from_dict(
            {
                "failures": values.get("failures", 0.0),
                "level": int(values.get("level", 0)),
                "until": until,
                "at": self.clock(),
                "level_at": until,
                "started": until - self.policy.seconds(int(values.get("level", 0)))
                if until > self.clock()
                else 0.0,
            }
        )

    def _save(self, name: str, state: LockoutState) -> None:
        self._states[name] = state
        self._store.set_meta(_PREFIX + name, json.dumps(state.to_dict()))

    @staticmethod
    def staff_key(staff_no: str | None) -> str:
        return f"staff:{staff_no}" if staff_no else f"staff:{UNKNOWN_STAFF}"

    # --- the keypad ----------------------------------------------------------------------

    def remaining(self, name: str = KEYPAD) -> float:
        """Seconds until guesses are checked again (0 when not locked), in tenths rounded
        up: never 0 while the lockout still refuses."""
        return machine.remaining(self._state(name), self.clock())

    def level(self, name: str = KEYPAD) -> int:
        return machine.decayed(self._state(name), self.policy, self.clock()).level

    def refused(self, name: str = KEYPAD, *, second_factor: bool = False) -> CodeRefused:
        """Count a guess refused during a lockout (no event, no write): the error to raise."""
        self.tick(name)
        state = self._state(name)
        self._states[name] = machine.refuse(state, second_factor=second_factor)
        reason = "wrong_with_mobile" if second_factor else "locked_out"
        return CodeRefused(reason, retry_after=self.remaining(name) or None)

    def failed(self, reason: str, name: str = KEYPAD, **data: object) -> CodeRefused:
        """Count a wrong guess, checked outside a lockout; returns the error to raise
        (locked_out when this one started a lockout)."""
        now = self.clock()
        self.tick(name)
        verdict = machine.fail(self._state(name), self.policy, now)
        who = {"staff_no": name.removeprefix("staff:")} if name != KEYPAD else {}
        with self._store.transaction():
            self._events.record(
                EventType.CODE_REFUSED, None, reason=reason, failures=verdict.failures, **data
            )
            who = {"staff_no": data.get("staff_no", who.get("staff_no"))} if who else {}
            if verdict.locked:
                alarm = {"alarm": True} if verdict.alarm else {}
                self._events.record(
                    EventType.LOCKOUT,
                    None,
                    seconds=verdict.seconds,
                    level=verdict.state.level,
                    **who,
                    **alarm,
                )
            self._save(name, verdict.state)
        if verdict.locked:
            return CodeRefused("locked_out", retry_after=verdict.seconds)
        return CodeRefused(reason)

    def tick(self, name: str | None = None) -> None:
        """Report the lockout windows that have ended (``lockout_ended``, one per window)."""
        now = self.clock()
        names = [name] if name is not None else sorted({KEYPAD, *self._states})
        for key in names:
            state, summary = machine.close_window(self._state(key), now)
            if summary is not None:
                with self._store.transaction():
                    self._record_summary(key, summary)
                    self._save(key, state)

    def _record_summary(self, name: str, summary: machine.WindowSummary) -> None:
        who = {"staff_no": name.removeprefix("staff:")} if name != KEYPAD else {}
        self._events.record(EventType.LOCKOUT_ENDED, None, **summary.event_data(), **who)

    def lift(self, by: str) -> dict[str, object]:
        """Staff lifted the lockouts (a signed ``lift_lockout`` command): keypad and staff
        counters start afresh; each window running is reported as lifted."""
        now = self.clock()
        names = {KEYPAD, *self._states}
        names.update(k.removeprefix(_PREFIX) for k in self._store.metas(_PREFIX + "staff:"))
        lifted = []
        with self._store.transaction():
            for name in sorted(names):
                before = self._state(name)
                state, summary = machine.lift(before, now, by)
                if summary is not None:
                    self._record_summary(name, summary)
                if machine.locked(before, now):
                    lifted.append(name)
                self._save(name, state)
        return {"lifted": lifted}

    # --- staff log-ins -------------------------------------------------------------------

    def staff_check(self, member: str | None) -> None:
        """Raise CodeRefused('locked_out') while this staff number's log-ins are locked
        (``member``: a known staff number, None for any unknown one)."""
        name = self.staff_key(member)
        if self.remaining(name) > 0:
            raise self.refused(name)

    def staff_failed(self, member: str | None, **data: object) -> CodeRefused:
        return self.failed("staff_login_failed", self.staff_key(member), **data)
