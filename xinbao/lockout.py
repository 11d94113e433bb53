"""The brute-force guard for opening codes and staff log-ins, one state machine for the
cabinet (locker_controller/lockout.py) and the cloud (cloud_api/services/codes.py).

Pure: no clock, no storage. The caller loads a ``LockoutState``, passes ``now`` (seconds,
wall time) and stores what comes back.

The rules (docs/controller.md "Lockout"):

- Every wrong guess adds one to ``failures``; failures leak away with time, one per
  ``forgive_s``. Nothing else lowers them: an accepted code (someone else's success) leaves
  the count and the level alone, so a busy cabinet gives a guesser no more tries than an
  idle one.
- ``failures`` reaching ``threshold`` starts a lockout of ``base_s * 2**(level-1)`` seconds
  (capped at ``max_s``) and raises ``level``; the level falls by one for every
  ``level_decay_s`` that passes without a lockout, so a few mistakes an hour never build up
  to a cabinet locked for good.
- While locked, guesses are not checked (a refused guess tells nothing) and not counted as
  failures: they are only counted in ``refused``, reported once per lockout window
  (``close_window``), never one by one.
- A lockout stops guessing, not people: the caller still accepts a valid code together with a
  second factor a guesser lacks (the last 4 digits of the mobile the code was sent to,
  ``mobile_digest``). Staff log-ins have their own states, one per staff number.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

# A guesser who needs the mobile's last 4 digits too: 1e-4 times the code's odds.
MOBILE_DIGITS = 4


@dataclass(frozen=True)
class LockoutPolicy:
    threshold: int = 5
    base_s: float = 30.0
    max_s: float = 3600.0
    # One failure forgotten per forgive_s (12 min: five an hour never lock).
    forgive_s: float = 720.0
    # One level dropped per level_decay_s (40 min) without a lockout, from the last one's end.
    level_decay_s: float = 2400.0
    # A lockout at this level or above raises an alarm for staff.
    alarm_level: int = 2

    def seconds(self, level: int) -> float:
        return float(min(self.base_s * 2 ** max(0, level - 1), self.max_s))


@dataclass(frozen=True)
class LockoutState:
    failures: float = 0.0
    level: int = 0
    until: float = 0.0  # the lockout ends then (0: none)
    at: float = 0.0  # failures are as of this moment
    level_at: float = 0.0  # the level's decay is counted from here
    started: float = 0.0  # the current (or last unreported) lockout began then; 0: none
    refused: int = 0  # guesses refused unchecked in this window
    second_factor_failed: int = 0  # code + mobile digits tried in this window and wrong

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> LockoutState:
        """A stored state; anything unreadable is a fresh state (never an exception)."""
        if not isinstance(data, dict):
            return cls()
        known = {}
        for name, default in asdict(cls()).items():
            value = data.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int | float):
                value = default
            if not math.isfinite(value) or value < 0:
                value = default
            known[name] = type(default)(value)
        return cls(**known)


@dataclass(frozen=True)
class Verdict:
    """What one failure did: ``locked`` True when it started a lockout."""

    state: LockoutState
    locked: bool = False
    seconds: float = 0.0
    alarm: bool = False
    failures: int = 0


@dataclass(frozen=True)
class WindowSummary:
    """One lockout window, reported once when it ends (or is lifted)."""

    level: int
    started: float
    ended: float
    refused: int
    second_factor_failed: int
    lifted_by: str | None = None

    def event_data(self) -> dict[str, Any]:
        found = {
            "level": self.level,
            "started": round(self.started, 3),
            "ended": round(self.ended, 3),
            "refused": self.refused,
            "second_factor_failed": self.second_factor_failed,
        }
        if self.lifted_by is not None:
            found["lifted_by"] = self.lifted_by
        return found


def remaining(state: LockoutState, now: float) -> float:
    """Seconds of lockout left, in tenths rounded up (never 0 while locked)."""
    left = state.until - now
    return math.ceil(left * 10) / 10 if left > 0 else 0.0


def locked(state: LockoutState, now: float) -> bool:
    return state.until > now


def decayed(state: LockoutState, policy: LockoutPolicy, now: float) -> LockoutState:
    """The state at ``now``: failures leaked away, levels dropped for quiet hours."""
    failures = state.failures
    if now > state.at:
        failures = max(0.0, failures - (now - state.at) / policy.forgive_s)
    level, level_at = state.level, state.level_at
    if level and now > state.until and now > level_at:
        anchor = max(level_at, state.until)
        steps = int((now - anchor) // policy.level_decay_s)
        if steps:
            level = max(0, level - steps)
            level_at = anchor + steps * policy.level_decay_s
    return replace(state, failures=failures, at=max(now, state.at), level=level, level_at=level_at)


def fail(state: LockoutState, policy: LockoutPolicy, now: float) -> Verdict:
    """Count one wrong guess (checked, outside a lockout)."""
    state = decayed(state, policy, now)
    failures = state.failures + 1
    # A failure counts whole until forgive_s has passed over it: five in a row lock.
    if math.ceil(failures - 1e-9) < policy.threshold:
        return Verdict(replace(state, failures=failures), failures=math.ceil(failures))
    level = state.level + 1
    seconds = policy.seconds(level)
    until = now + seconds
    state = replace(
        state,
        failures=0.0,
        level=level,
        until=until,
        level_at=until,
        started=state.started or now,
    )
    return Verdict(
        state,
        locked=True,
        seconds=seconds,
        alarm=level >= policy.alarm_level,
        failures=math.ceil(failures),
    )


def refuse(state: LockoutState, *, second_factor: bool = False) -> LockoutState:
    """A guess refused unchecked during a lockout (or a wrong code + mobile digits)."""
    if second_factor:
        return replace(state, second_factor_failed=state.second_factor_failed + 1)
    return replace(state, refused=state.refused + 1)


def close_window(
    state: LockoutState, now: float, *, lifted_by: str | None = None
) -> tuple[LockoutState, WindowSummary | None]:
    """End the lockout window once it is over (or at once when lifted): the one summary of
    what was refused in it. None while it runs, or when there is no window."""
    if not state.started or (lifted_by is None and locked(state, now)):
        return state, None
    summary = WindowSummary(
        level=state.level,
        started=state.started,
        ended=min(now, state.until) if lifted_by is None else now,
        refused=state.refused,
        second_factor_failed=state.second_factor_failed,
        lifted_by=lifted_by,
    )
    return replace(state, started=0.0, refused=0, second_factor_failed=0), summary


def lift(state: LockoutState, now: float, by: str) -> tuple[LockoutState, WindowSummary | None]:
    """Staff lift the lockout: the window is reported, count and level start afresh."""
    _, summary = close_window(state, now, lifted_by=by)
    return LockoutState(at=now, level_at=now), summary


# --- the second factor -------------------------------------------------------------------


def mobile_last_digits(mobile: str) -> str | None:
    """The last 4 digits of a mobile number as the applicant would type them, or None."""
    digits = "".join(ch for ch in str(mobile) if ch.isascii() and ch.isdigit())
    return digits[-MOBILE_DIGITS:] if len(digits) >= MOBILE_DIGITS else None


def mobile_digest(locker_key: bytes, handover_id: int, last_digits: str) -> str:
    """Keyed digest of one handover's mobile digits: what the cabinet holds instead of them.

    Keyed with the locker key and bound to the handover, so one digest says nothing about
    another handover's (or another cabinet's) number."""
    message = f"xinbao-mobile4|{int(handover_id)}|{last_digits}".encode()
    return hmac.new(locker_key, message, hashlib.sha256).hexdigest()


def mobile_matches(
    locker_key: bytes, handover_id: int, typed: str, digest: str | None
) -> bool:
    if not digest or not well_formed_mobile_digits(typed):
        return False
    return hmac.compare_digest(mobile_digest(locker_key, handover_id, typed), digest)


def well_formed_mobile_digits(typed: object) -> bool:
    return (
        isinstance(typed, str)
        and len(typed) == MOBILE_DIGITS
        and typed.isascii()
        and typed.isdigit()
    )
