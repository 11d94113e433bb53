"""Guesses per day an attacker gets at a busy cabinet (a pickup every 10 minutes).

The attacker types wrong codes at the keypad, one a second at most (the kiosk's rate limit),
and plays several strategies against the lockout: greedy (guess whenever guesses are
checked), paced (wait W seconds after each lockout, then guess), and trickle (never quite
reach the threshold). The figure is the best strategy's count of CHECKED guesses in 24 h:
guesses refused unchecked during a lockout cannot open anything. Honest pickups happen every
10 minutes throughout; with the shared state machine (xinbao/lockout.py) they change
nothing, which is the point. ``--before`` runs the same attacker against the controller's
lockout as it was before issue 11 (taken from git), where an accepted code reset the count
and the level. Target: <= 200 a day (issue 11).

    .venv/bin/python bench/guess_budget.py --before
"""

from __future__ import annotations

import argparse
import subprocess
import types
from pathlib import Path

from xinbao import lockout as machine
from xinbao.lockout import LockoutPolicy, LockoutState

DAY = 86_400.0
PICKUP_EVERY_S = 600.0
RATE_S = 1.0  # one request a second per client (kiosk rate limit, steady state)
REPO = Path(__file__).resolve().parents[1]
OLD_COMMIT = "eef8e52"


class NewRules:
    def __init__(self, policy: LockoutPolicy) -> None:
        self.policy = policy
        self.state = LockoutState()

    def locked(self, now: float) -> bool:
        return machine.locked(self.state, now)

    def guess(self, now: float) -> None:
        self.state = machine.fail(self.state, self.policy, now).state

    def pickup(self, now: float) -> None:
        pass  # an accepted code resets nothing

    def failures(self, now: float) -> float:
        return machine.decayed(self.state, self.policy, now).failures


class OldRules:
    """locker_controller/lockout.py as of OLD_COMMIT, with its clock and store faked."""

    def __init__(self, policy: LockoutPolicy) -> None:
        source = subprocess.run(
            ["git", "show", f"{OLD_COMMIT}:locker_controller/lockout.py"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        module = types.ModuleType("old_lockout")
        exec(compile(source, "old_lockout.py", "exec"), module.__dict__)
        self.now = 0.0
        module.time = types.SimpleNamespace(time=lambda: self.now)
        meta: dict[str, str] = {}

        class Store:
            def get_meta(self, key, default=None):
                return meta.get(key, default)

            def set_meta(self, key, value):
                meta[key] = value

            def transaction(self):
                import contextlib

                return contextlib.nullcontext()

        class Events:
            def record(self, *a, **k):
                pass

        config = types.SimpleNamespace(
            lockout_threshold=policy.threshold,
            lockout_base_s=policy.base_s,
            lockout_max_s=policy.max_s,
        )
        self.lockout = module.Lockout(config, Store(), Events())
        self.meta = meta

    def locked(self, now: float) -> bool:
        self.now = now
        return self.lockout.remaining() > 0

    def guess(self, now: float) -> None:
        self.now = now
        self.lockout.failed("wrong")

    def pickup(self, now: float) -> None:
        self.now = now
        if not self.locked(now):
            self.lockout.succeeded()

    def failures(self, now: float) -> float:
        return float(self.meta.get("lockout:failures", "0"))


def attack(rules, strategy: str, wait_s: float = 0.0, threshold: int = 5) -> int:
    """Checked guesses in one day; pickups every 10 minutes."""
    guesses = 0
    now = 0.0
    next_pickup = PICKUP_EVERY_S
    unlocked_since = 0.0
    was_locked = False
    while now < DAY:
        if now >= next_pickup:
            rules.pickup(next_pickup)
            next_pickup += PICKUP_EVERY_S
        locked = rules.locked(now)
        if was_locked and not locked:
            unlocked_since = now
        was_locked = locked
        if not locked:
            go = True
            if strategy == "paced":
                go = now - unlocked_since >= wait_s
            elif strategy == "paced+trickle":
                # Trickle while waiting (never reaching the threshold), then a burst.
                waited = now - unlocked_since >= wait_s
                go = waited or rules.failures(now) + 1 < threshold
            elif strategy == "trickle":
                go = rules.failures(now) + 1 < threshold
            if go:
                rules.guess(now)
                guesses += 1
        now += RATE_S
    return guesses


def budget(make) -> tuple[int, str]:
    results = {"greedy": attack(make(), "greedy"), "trickle": attack(make(), "trickle")}
    for wait in (60, 300, 600, 1200, 1800, 2400, 3000, 3600, 5400):
        results[f"paced {wait} s"] = attack(make(), "paced", wait)
        results[f"trickle+{wait} s"] = attack(make(), "paced+trickle", wait)
    best = max(results, key=results.get)
    return results[best], best, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", action="store_true", help="also the old lockout (git)")
    args = parser.parse_args()
    policy = LockoutPolicy()
    count, best, results = budget(lambda: NewRules(policy))
    print(f"policy: {policy}")
    for name, n in results.items():
        print(f"  {name:>14}: {n} guesses")
    print(f"after:  {count} checked guesses a day at a busy cabinet (best strategy: {best})")
    if args.before:
        old, old_best, _ = budget(lambda: OldRules(policy))
        print(f"before: {old} checked guesses a day at a busy cabinet (best strategy: {old_best})")


if __name__ == "__main__":
    main()
