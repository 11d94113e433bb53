"""Rows written per hour while one client floods a cabinet's keypad with wrong codes.

A controller is built in this process (its real store, kiosk app and keypad; the simulator's
boards over a pty) and one client posts wrong codes to ``/api/code`` as fast as it can. Counted:
the events the controller writes to its outbox, each of which becomes one ``locker_event`` row
in the cloud, and of those the kinds the cloud audits one audit row each
(cloud_api/mqtt/effects.py AUDITED: code_refused, lockout, lockout_ended, ...).

Two ways to run, picked by what the code supports:

- the shared lockout (issue 11): an hour is simulated on faked clocks for the lockout and the
  kiosk's rate limit, at 113 requests a second (what the issue measured): 406,800 requests,
  of which the rate limit lets one a second through and the rest get 429 with nothing
  written. Only the requests that pass are actually sent (the others cannot write anything:
  the rate limit answers before the keypad; tests/locker_controller/test_keypad_attacks.py).
- the controller before issue 11 (``PYTHONPATH=<old tree>``): a real-time flood for
  ``--seconds``, scaled to an hour (it writes one row per request whatever the rate).

    .venv/bin/python bench/keypad_flood.py
    git archive eef8e52 | tar -x -C /tmp/old && PYTHONPATH=/tmp/old .venv/bin/python \\
        bench/keypad_flood.py --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from locker_controller.app import Controller
from locker_controller.config import parse_config
from locker_controller.kiosk import build_app
from simulator import BoardSpec, Simulator

FLOOD_PER_S = 113  # requests a second from one client (issue 11's measurement)
AUDITED = {"code_refused", "lockout", "lockout_ended", "command_rejected", "staff_login"}


def config_text(data_dir: Path, port: str) -> str:
    return (
        f'locker_id = "FLOOD-1"\nmaster_key_hex = "{"42" * 32}"\ndata_dir = "{data_dir}"\n'
        '[kiosk]\nhost = "127.0.0.1"\nport = 0\n\n'
        f'[[buses]]\nport = "{port}"\nprotocol = "kerong-cu16"\ntimeout_s = 0.2\n'
        "  [[buses.boards]]\n  address = 1\n  channels = 16\n  pulse_ms = 100\n\n"
        '[[compartments]]\nnumber = 1\nsize = "M"\nboard = 1\nchannel = 1\n'
    )


def counts(ctl: Controller) -> Counter:
    events = ctl.store.pending_events(0, 10_000_000)
    return Counter(e.type.value for e in events)


async def flood(ctl: Controller, seconds: float, simulated: bool) -> tuple[int, float]:
    """(requests sent, seconds covered)."""
    clock = [1_800_000_000.0]
    if simulated:
        ctl.lockout.clock = lambda: clock[0]
        app = build_app(ctl, clock=lambda: clock[0])
    else:
        app = build_app(ctl)
    transport = httpx.ASGITransport(app=app, client=("10.0.0.66", 50000))
    sent = 0
    async with httpx.AsyncClient(transport=transport, base_url="http://kiosk") as http:
        if simulated:
            # One request passes the rate limit each second (after the burst); the other
            # 112 a second are answered 429 before the keypad and write nothing.
            steps = int(seconds)
            for second in range(steps):
                clock[0] += 1.0
                passes = 20 if second == 0 else 1
                for _ in range(passes):
                    r = await http.post("/api/code", json={"code": f"{10_000_000 + sent:08d}"})
                    sent += 1
                    assert r.status_code in (400, 429), r.text
                if second % 60 == 0:
                    ctl.lockout.tick()
            ctl.lockout.tick()
            return steps * FLOOD_PER_S, seconds
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            await http.post("/api/code", json={"code": f"{10_000_000 + sent % 89_999_999:08d}"})
            sent += 1
        return sent, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="real-time flood (old code)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Simulator(
        [BoardSpec(protocol="kerong-cu16", address=1, channels=16, pulse_ms=100)],
        wire_timing=False,
    ) as sim:
        ctl = Controller(parse_config(config_text(Path(tmp) / "data", sim.start_pty())))
        simulated = hasattr(ctl.lockout, "clock")
        ctl.cabinet.open()
        try:
            seconds = 3600.0 if simulated else args.seconds
            requests, covered = asyncio.run(flood(ctl, seconds, simulated))
            found = counts(ctl)
        finally:
            ctl.cabinet.close()
            ctl.store.close()
    scale = 3600.0 / covered
    events = sum(found.values())
    audited = sum(n for kind, n in found.items() if kind in AUDITED)
    mode = "shared lockout, simulated hour" if simulated else "old lockout, real time"
    print(f"{mode}: {requests} requests in {covered:.1f} s ({requests / covered:.0f}/s)")
    print(f"  outbox events by kind: {dict(found)}")
    print(f"  cloud event rows per hour: {events * scale:,.0f}")
    print(f"  cloud audit rows per hour: {audited * scale:,.0f}")


if __name__ == "__main__":
    main()
