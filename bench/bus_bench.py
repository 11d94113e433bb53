"""Bus benchmark: a full status scan of a 4-board bus, and unlock latency, against the
simulator with wire timing (10 bits a byte at the protocol's baud rate).

    .venv/bin/python bench/bus_bench.py [--scans 40] [--unlocks 20]

The floor is the wire time itself: the bytes of every request and reply that one scan put on
the line, taken from the simulator's ground-truth log, times 10 / baud. No code can scan
faster than that; the ratio says how much the master's own work and the boards' reply delay
(1 ms per reply in the simulator, as fast real boards answer) add on top. Target: <= 1.3x.

Unlock latency is measured two ways: from the call to the unlock frame being complete on the
wire (the simulator's timestamp; the part a person at the keypad waits for before the lock
fires), and the whole ``LockBus.unlock`` round trip, which includes the lock pulse and the
status read that tells ``opened`` from ``jammed``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

from firmware_bridge import BoardConfig, LockBus, UnlockOutcome
from simulator import BoardSpec, Simulator

BOARDS = (1, 2, 3, 4)
CHANNELS = 16
CASES = (("kerong-cu16", 19200), ("bcc-8a", 9600))
LINKS = ("pty", "tcp")


@dataclass
class ScanFigures:
    protocol: str
    baud: int
    link: str
    scan_p50: float
    scan_p99: float
    floor: float
    unlock_wire_p50: float
    unlock_wire_p99: float
    unlock_wire_max: float
    unlock_floor: float
    unlock_total_p50: float
    unlock_total_p99: float


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def wire_seconds(sim: Simulator, since: int, baud: int) -> float:
    """Wire time of every frame and reply logged after truth seq ``since``."""
    total_bytes = 0
    for event in sim.truth.events(since=since):
        if event.kind in ("frame_received", "reply_sent"):
            total_bytes += len(bytes.fromhex(event.data["hex"]))
    return total_bytes * 10 / baud


def measure(protocol: str, baud: int, link: str, scans: int, unlocks: int) -> ScanFigures:
    specs = [
        BoardSpec(protocol=protocol, address=a, channels=CHANNELS, pulse_ms=300) for a in BOARDS
    ]
    configs = [
        BoardConfig(protocol=protocol, address=a, channels=CHANNELS, pulse_ms=300)
        for a in BOARDS
    ]
    with Simulator(specs, wire_timing=True, reply_delay=0.001, baud=baud) as sim:
        url = sim.start_pty() if link == "pty" else sim.start_tcp("127.0.0.1", 0)
        with LockBus.open(url, protocol, baud=baud, boards=configs) as bus:
            for address in BOARDS:  # warm up: open the port, fill caches
                bus.status(address)

            durations = []
            floors = []
            for _ in range(scans):
                since = sim.truth.last_seq
                start = time.perf_counter()
                for address in BOARDS:
                    bus.status(address)
                durations.append(time.perf_counter() - start)
                floors.append(wire_seconds(sim, since, baud))

            to_wire = []
            totals = []
            unlock_floor = 0.0
            for i in range(unlocks):
                board, channel = BOARDS[i % len(BOARDS)], i % CHANNELS + 1
                since = sim.truth.last_seq
                start = time.monotonic()
                result = bus.unlock(board, channel)
                totals.append(time.monotonic() - start)
                if result.outcome is not UnlockOutcome.OPENED:
                    raise SystemExit(f"unlock {board}/{channel}: {result.outcome.value}")
                frame = next(
                    e
                    for e in sim.truth.events(kind="frame_received", since=since)
                    if e.channel == channel
                )
                to_wire.append(frame.mono - start)
                unlock_floor = len(bytes.fromhex(frame.data["hex"])) * 10 / baud
                sim.close_door(board, channel)
                print(".", end="", flush=True)
    return ScanFigures(
        protocol,
        baud,
        link,
        statistics.median(durations),
        percentile(durations, 99),
        statistics.median(floors),
        statistics.median(to_wire),
        percentile(to_wire, 99),
        max(to_wire),
        unlock_floor,
        statistics.median(totals),
        percentile(totals, 99),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=40, help="status scans per case")
    parser.add_argument("--unlocks", type=int, default=20, help="unlocks per case")
    args = parser.parse_args()
    if args.scans < 1 or args.unlocks < 1:
        parser.error("--scans and --unlocks must be at least 1")

    rows = []
    for protocol, baud in CASES:
        for link in LINKS:
            print(f"{protocol} at {baud} baud over {link}: ", end="", flush=True)
            rows.append(measure(protocol, baud, link, args.scans, args.unlocks))
            print(" done")

    ms = 1000
    print()
    print(f"Status scan of {len(BOARDS)} boards x {CHANNELS} channels ({args.scans} scans)")
    print(f"{'protocol':<12} {'baud':>5} {'link':<4} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'floor ms':>9} {'p50/floor':>10} {'p99/floor':>10}")
    for r in rows:
        print(f"{r.protocol:<12} {r.baud:>5} {r.link:<4} {r.scan_p50 * ms:>8.2f} "
              f"{r.scan_p99 * ms:>8.2f} {r.floor * ms:>9.2f} {r.scan_p50 / r.floor:>9.2f}x "
              f"{r.scan_p99 / r.floor:>9.2f}x")
    print()
    print(f"Unlock ({args.unlocks} unlocks): call -> unlock frame complete on the wire, "
          "and the whole unlock() round trip (pulse 300 ms + status read)")
    print(f"{'protocol':<12} {'baud':>5} {'link':<4} {'wire p50':>9} {'wire p99':>9} "
          f"{'wire max':>9} {'floor':>7} {'total p50':>10} {'total p99':>10}")
    for r in rows:
        print(f"{r.protocol:<12} {r.baud:>5} {r.link:<4} {r.unlock_wire_p50 * ms:>9.2f} "
              f"{r.unlock_wire_p99 * ms:>9.2f} {r.unlock_wire_max * ms:>9.2f} "
              f"{r.unlock_floor * ms:>7.2f} {r.unlock_total_p50 * ms:>10.1f} "
              f"{r.unlock_total_p99 * ms:>10.1f}")
    print("(all times in ms; floor = bytes on the wire x 10 / baud; target scan <= 1.3x floor)")


if __name__ == "__main__":
    main()
