"""Issue 10's model walk, long: ``python bench/soak.py --hours H [--seeds N] [--steps N]``.

Runs tests/e2e/test_model_walk.py (the real stack: cloud, Mosquitto, controller child,
simulator) over and over, one pytest run per round with ``--seeds`` new seeds of ``--steps``
steps each (on SQLite, or ``--backend postgres``; controller restarts included unless
``--no-restarts``), until ``--hours`` have passed (at least one round). Prints, per round and
in total, how many actions ran and invariants were checked, and each failing seed with the
steps that reproduce it. Exit status 1 if any seed failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/e2e/test_model_walk.py"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=0.0)
    ap.add_argument("--seeds", type=int, default=4, help="seeds per round")
    ap.add_argument("--steps", type=int, default=60, help="steps per seed")
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--workers", default="2", help="pytest-xdist workers (-n)")
    ap.add_argument("--no-restarts", action="store_true")
    args = ap.parse_args()

    deadline = time.monotonic() + args.hours * 3600
    total: Counter = Counter()
    failed: list[dict] = []
    seed, rounds, runs = args.first_seed, 0, 0
    started = time.monotonic()
    while True:
        seeds = list(range(seed, seed + args.seeds))
        seed += args.seeds
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "walk.jsonl"
            env = {
                **os.environ,
                "XINBAO_WALK_SEEDS": ",".join(map(str, seeds)),
                "XINBAO_WALK_STEPS": str(args.steps),
                "XINBAO_WALK_RESTARTS": "0" if args.no_restarts else "1",
                "XINBAO_WALK_REPORT": str(report),
            }
            cmd = [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-n",
                args.workers,
                "--timeout",
                str(max(300, args.steps * 40)),
                "-k",
                args.backend,
                TEST,
            ]
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            lines = report.read_text().splitlines() if report.exists() else []
        rounds += 1
        results = [json.loads(line) for line in lines]
        for r in results:
            runs += 1
            total.update(r["counts"])
            if r["failed"]:
                failed.append(r)
        if proc.returncode != 0 and not any(r["failed"] for r in results):
            failed.append(
                {"seed": seeds, "backend": args.backend, "steps": [], "error": proc.stdout[-3000:]}
            )
        checks = sum(v for k, v in total.items() if k.startswith("check "))
        print(
            f"round {rounds}: seeds {seeds[0]}-{seeds[-1]}, pytest rc={proc.returncode}, "
            f"{runs} walks, {checks} invariant checks, {len(failed)} failed, "
            f"{(time.monotonic() - started) / 60:.1f} min",
            flush=True,
        )
        if proc.returncode != 0:
            print(proc.stdout[-4000:], flush=True)
        if time.monotonic() >= deadline:
            break

    print("\ninvariant checks and actions:")
    for key in sorted(total):
        print(f"  {key:40s} {total[key]}")
    for f in failed:
        print(f"\nFAILED seed {f['seed']} ({f['backend']}):")
        for step in f["steps"]:
            print(f"  {step}")
        if f.get("error"):
            print(f"  -> {f['error']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
