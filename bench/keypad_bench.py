"""Keypad to lock pulse: code submitted to the controller's local API -> unlock frame on wire.

Offline path (no broker configured). The simulator runs kerong-cu16 at 19200 baud with wire
timing on, served over a pty; the controller runs as its own process, exactly as in a cabinet.
Each run measures from just before the HTTP POST /api/code to the simulator's ground-truth
instant that the unlock frame's last byte was complete on the wire (both clocks are this
process's time.monotonic: the simulator runs here). Printed beside the wire-time floor
(unlock frame bytes x 10 bits / baud). Target p99 <= 25 ms (DESIGN.md §8).

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

from locker_controller.store import Handover, Store
from simulator import BoardSpec, Simulator
from xinbao.codes import code_for, derive_locker_key

LOCKER_ID = "BENCH-1"
MASTER = bytes.fromhex("42" * 32)
BAUD = 19200
UNLOCK_FRAME_BYTES = 5  # 02 ADDR 31 03 SUM (DESIGN.md §4)
CHANNELS = 16


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
        f'[kiosk]\nhost = "127.0.0.1"\nport = {port}\n\n'
        f'[[buses]]\nport = "{dev}"\nprotocol = "kerong-cu16"\nbaud = {BAUD}\n'
        f"  [[buses.boards]]\n  address = 1\n  channels = {CHANNELS}\n  pulse_ms = 100\n\n"
        + compartments
    )


def seed(store: Store, i: int) -> None:
    """Pickup handover ``i`` straight into the controller's store, as a sync leaves it.

    Seeded just ahead of use, so the cabinet holds about as many live codes as it has
    compartments (the cost of matching a code grows with the live codes).
    """
    expires = datetime.now(UTC) + timedelta(days=1)
    number = i % CHANNELS + 1
    store.upsert_handover(
        Handover(i + 1, "pickup", number, "M", 1000 + i, 8, expires, "deposited", None)
    )


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
    floor = UNLOCK_FRAME_BYTES * 10 / BAUD
    ms = [x * 1000 for x in latencies]
    print(f"keypad -> unlock frame on the wire, kerong-cu16 @ {BAUD} baud, {len(ms)} runs")
    print(f"  wire-time floor : {floor * 1000:6.2f} ms ({UNLOCK_FRAME_BYTES} bytes x 10 / baud)")
    print(f"  p50             : {statistics.median(ms):6.2f} ms")
    print(f"  p99             : {percentile(ms, 0.99):6.2f} ms  (target <= 25 ms)")
    print(f"  max             : {max(ms):6.2f} ms")


if __name__ == "__main__":
    main()
