"""Keypad to lock pulse: code submitted to the controller's local API -> unlock frame on wire.

Offline path (no broker configured). The simulator runs kerong-cu16 at 19200 baud with wire
timing on, served over a pty; the controller runs as its own process, exactly as in a cabinet.
Each run measures from just before the HTTP POST /api/code to the simulator's ground-truth
instant that the unlock frame's last byte was complete on the wire (both clocks are this
process's time.monotonic: the simulator runs here). Printed beside the wire-time floor
(unlock frame bytes x 10 bits / baud). Target p99 <= 25 ms (DESIGN.md §8).

The cabinet holds LIVE_CODES live codes throughout (16 pickups ready in the compartments
plus reserved drop-offs), as DESIGN.md §6 plans for: every code typed is matched against
all of them. The controller commits the purpose and code_accepted (one fsync) before it
sends the frame, so a crash cannot open a door without a record; that commit is measured
on its own too, on the same disk, and is part of the end-to-end figures.

    .venv/bin/python bench/keypad_bench.py --runs 200
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from locker_controller.code_book import CodeBook
from locker_controller.operations import Operations, Purpose
from locker_controller.outbox import EventLog
from locker_controller.store import Handover, Store
from simulator import BoardSpec, Simulator
from xinbao.codes import code_for, derive_locker_key
from xinbao.contract import EventType

LOCKER_ID = "BENCH-1"
MASTER = bytes.fromhex("42" * 32)
BAUD = 19200
UNLOCK_FRAME_BYTES = 5  # 02 ADDR 31 03 SUM (DESIGN.md §4)
CHANNELS = 16
LIVE_CODES = 120
DROPOFF_BASE = 1_000_000  # counters of the reserved drop-offs, apart from the pickups'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, data_dir: Path, dev: str, port: int) -> None:
    compartments = "".join(
        f'[[compartments]]\nnumber = {n}\nsize = "M"\nboard = 1\nchannel = {n}\n\n'
        for n in range(1, CHANNELS + 1)
    )
    path.write_text(
        f'locker_id = "{LOCKER_ID}"\nmaster_key_hex = "{MASTER.hex()}"\n'
        f'data_dir = "{data_dir}"\npoll_interval_s = 0.2\n\n'
        # The bench is one client typing codes back to back: no per-client rate limit.
        f'[kiosk]\nhost = "127.0.0.1"\nport = {port}\nrate_burst = 10000\nrate_per_s = 10000\n\n'
        f'[[buses]]\nport = "{dev}"\nprotocol = "kerong-cu16"\nbaud = {BAUD}\n'
        f"  [[buses.boards]]\n  address = 1\n  channels = {CHANNELS}\n  pulse_ms = 100\n\n"
        + compartments
    )


def seed(store: Store, i: int) -> None:
    """Pickup handover ``i`` straight into the controller's store, as a sync leaves it.

    Seeded just ahead of use, one per compartment; collected ones leave the live set.
    """
    expires = datetime.now(UTC) + timedelta(days=1)
    number = i % CHANNELS + 1
    store.upsert_handover(
        Handover(i + 1, "pickup", number, "M", 1000 + i, 8, expires, "deposited", None)
    )


def seed_reserved_dropoffs(store: Store, count: int) -> None:
    """Drop-off codes issued but not used yet: live, matched against every code typed."""
    expires = datetime.now(UTC) + timedelta(days=1)
    for j in range(count):
        store.upsert_handover(
            Handover(
                DROPOFF_BASE + j, "dropoff", None, "M", DROPOFF_BASE + j, 8, expires,
                "reserved", None,
            )
        )  # fmt: skip


def commit_cost(data_dir: Path, runs: int) -> list[float]:
    """Seconds per commit of what the controller writes before the pulse (the purpose and
    code_accepted in one transaction), on the same disk as the controller's store."""
    store = Store(data_dir / "commit-bench.sqlite3")
    events = EventLog(store)
    operations = Operations(store, events)
    costs = []
    try:
        for i in range(runs):
            t0 = time.perf_counter()
            with store.transaction():
                operations.begin(1, Purpose("pickup", handover_id=i))
                events.record(EventType.CODE_ACCEPTED, 1, handover_id=i, kind="pickup")
            costs.append(time.perf_counter() - t0)
    finally:
        store.close()
    return costs


def match_cost(key: bytes, runs: int) -> list[float]:
    """Seconds to match one code against LIVE_CODES live codes, as the keypad does (the
    controller's code book: digests of the live codes kept in memory)."""
    expires = datetime.now(UTC) + timedelta(days=1)
    live = [
        Handover(j, "dropoff", None, "M", DROPOFF_BASE + j, 8, expires, "reserved", None)
        for j in range(LIVE_CODES)
    ]
    book = CodeBook(key)
    book.warm(live)
    costs = []
    for i in range(runs):
        code = code_for(key, DROPOFF_BASE + i % LIVE_CODES)
        t0 = time.perf_counter()
        book.match(code, live)
        costs.append(time.perf_counter() - t0)
    return costs


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    key = derive_locker_key(MASTER, LOCKER_ID)
    latencies: list[float] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        Simulator(
            [BoardSpec(protocol="kerong-cu16", address=1, channels=CHANNELS)],
            wire_timing=True,
            baud=BAUD,
        ) as sim,
    ):
        dev = sim.start_pty()
        data_dir = Path(tmp) / "data"
        store = Store(data_dir / "controller.sqlite3")
        for i in range(min(CHANNELS, args.runs)):
            seed(store, i)
        seed_reserved_dropoffs(store, LIVE_CODES - CHANNELS)
        port = free_port()
        config = Path(tmp) / "bench.toml"
        write_config(config, data_dir, dev, port)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "xinbao.cli",
                "controller",
                "--config",
                str(config),
                "--log-level",
                "warning",
            ],
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=10) as http:
                deadline = time.monotonic() + 20
                while True:
                    try:
                        http.get("/api/status")
                        break
                    except httpx.HTTPError:
                        if time.monotonic() > deadline or proc.poll() is not None:
                            raise SystemExit("the controller did not start") from None
                        time.sleep(0.1)
                time.sleep(0.5)  # let the first polls set the door baseline
                for i in range(args.runs):
                    number = i % CHANNELS + 1
                    frame = bytes([0x02, (1 << 4) | (number - 1), 0x31, 0x03])
                    frame += bytes([sum(frame) & 0xFF])
                    since = len(sim.truth.events())
                    t0 = time.monotonic()
                    reply = http.post("/api/code", json={"code": code_for(key, 1000 + i)})
                    if reply.status_code != 200:
                        raise SystemExit(f"run {i}: {reply.status_code} {reply.text}")
                    sent = [
                        e
                        for e in sim.truth.events("frame_received", since=since)
                        if e.data.get("hex") == frame.hex(" ")
                    ]
                    if not sent:
                        raise SystemExit(f"run {i}: no unlock frame on the wire")
                    latencies.append(sent[0].data["on_wire_complete"] - t0)
                    sim.close_door(1, number)
                    if i + CHANNELS < args.runs:
                        seed(store, i + CHANNELS)
                    time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(15)
            store.close()
        commits = [x * 1000 for x in commit_cost(data_dir, args.runs)]
    matches = [x * 1000 for x in match_cost(key, args.runs)]
    floor = UNLOCK_FRAME_BYTES * 10 / BAUD
    ms = [x * 1000 for x in latencies]
    print(f"keypad -> unlock frame on the wire, kerong-cu16 @ {BAUD} baud, {len(ms)} runs,")
    print(f"{LIVE_CODES} live codes in the cabinet")
    print(f"  wire-time floor : {floor * 1000:6.2f} ms ({UNLOCK_FRAME_BYTES} bytes x 10 / baud)")
    print(f"  p50             : {statistics.median(ms):6.2f} ms")
    print(f"  p99             : {percentile(ms, 0.99):6.2f} ms  (target <= 25 ms)")
    print(f"  max             : {max(ms):6.2f} ms")
    print("parts of it, measured apart in this process:")
    print(
        f"  commit before the pulse (purpose + code_accepted, fsync): "
        f"p50 {statistics.median(commits):.2f} ms, p99 {percentile(commits, 0.99):.2f} ms"
    )
    print(
        f"  matching a code against {LIVE_CODES} live codes: "
        f"p50 {statistics.median(matches):.2f} ms, p99 {percentile(matches, 0.99):.2f} ms"
    )


if __name__ == "__main__":
    main()
