"""Bus scan and unlock round trip: LockBus against the simulator with wire timing on.

A 4-board bus of 16-channel boards, ``kerong-cu16`` and ``kerong-cu48`` at 19200 baud and
``bcc-8a`` at 9600, served over a pty and over TCP (pyserial ``socket://``). The simulator
holds every request until its last byte would be on the wire and sends each reply only once
its last byte would have arrived (8N1: 10 bits a byte), so the figures are bounded below by
real wire time.

Three floors for every figure:
- wire: the bytes' own time on the line, (request + reply bytes) x 10 / baud, bytes taken
  from the simulator's ground truth;
- wire + gaps: the same plus the silences the protocols make mandatory on every exchange:
  the inter-frame gap the bus keeps before each request (LockProtocol.gap: 3.5 characters
  on Modbus, one character of turnaround on Kerong and 8A lines) and the turnaround a board
  is documented to wait before it may answer (a Modbus slave's end-of-frame silence; none
  is documented for Kerong or 8A boards). No bus can go below this one.
- wire + gaps + think: the same plus the board's own think time before each reply (the
  simulator's ``--reply-delay``, 1 ms by default): the board's share of an exchange, which
  no bus code can remove either. What is left above it is the bus's own cost (its code, its
  timers and the scheduling of both sides on this machine).

- Scan: status of all 4 boards, one after another, repeated N times. Target: p99 within
  1.15x the floor with mandatory gaps and the board's think time; the ratio to the floor
  with gaps alone is printed beside it.
- Unlock: ``LockBus.unlock`` on a rotating board and channel. Two figures:
  * frame on the wire: the bus's frame_sent_at -> the simulator's ground-truth instant
    the unlock frame was complete on the wire; floor = frame bytes x 10 / baud;
  * round trip: frame_sent_at -> ``UnlockResult`` returned. The bus waits out the lock
    pulse plus a settle margin on purpose, then reads the board's status, so the floor is
    pulse + margin + that status exchange (a cu48 unlock has no reply to wait for, so
    nothing else: Kerong's CU48 document).
Both clocks are this process's time.monotonic (the simulator runs in-process).

Board think time (``--reply-delay``, default the simulator's 1 ms, BOARD_THINK_S) is inside
every measured time and in the third floor only. 1 ms is a board that answers at once; real
boards may be slower, which raises the measured times and the third floor by the same
amount per exchange, not the bus's share of them.

    .venv/bin/python bench/bus_bench.py                 # about 2 minutes
    .venv/bin/python bench/bus_bench.py --scans 50 --unlocks 10 --links pty
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass

from firmware_bridge import BoardConfig, LockBus, UnlockOutcome, get_protocol
from firmware_bridge.bus import PULSE_MARGIN_S
from simulator import BoardSpec, Simulator
from simulator.protocols import get_board_protocol
from simulator.sim import BOARD_THINK_S

BOARDS = (1, 2, 3, 4)
CHANNELS = 16
PULSE_MS = 100  # short, so the unlock runs fit the time budget; the floor includes it
BITS_PER_BYTE = 10  # 8N1
BUSES = (("kerong-cu16", 19200), ("kerong-cu48", 19200), ("bcc-8a", 9600))
UNLOCK_COMMANDS = {"unlock", "write_coil"}
SCAN_TARGET = 1.15  # scan p99 within this many times the floor with mandatory gaps


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def sleep_overshoot(samples: int = 2000) -> list[float]:
    """How late this machine wakes a thread from a 1 ms sleep, in seconds. Every exchange on
    the bus waits on timers on both sides (the bus's inter-frame gap, the simulator's wire
    time), so this scheduling noise is the part of a scan's tail no bus code can remove."""
    late = []
    for _ in range(samples):
        started = time.perf_counter()
        time.sleep(0.001)
        late.append(time.perf_counter() - started - 0.001)
    return late


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def mandatory_gap(protocol: str, baud: int) -> float:
    """Silence one exchange must contain: the bus's gap before the request and the board's
    documented wait before its reply."""
    return get_protocol(protocol).gap(baud) + get_board_protocol(protocol).frame_end_silence(baud)


@dataclass
class Row:
    bus: str
    link: str
    what: str
    samples: list[float]  # seconds
    floor: float  # seconds: wire time only
    gapped: float  # seconds: wire time and the mandatory gaps
    thought: float  # seconds: the above and the board's think time

    @property
    def p99(self) -> float:
        return percentile(self.samples, 0.99)

    def cells(self) -> list[str]:
        p50 = statistics.median(self.samples)
        return [
            self.bus,
            self.link,
            self.what,
            str(len(self.samples)),
            f"{p50 * 1000:.2f}",
            f"{self.p99 * 1000:.2f}",
            f"{max(self.samples) * 1000:.2f}",
            f"{self.floor * 1000:.2f}",
            f"{self.gapped * 1000:.2f}",
            f"{self.thought * 1000:.2f}",
            f"{p50 / self.floor:.2f}x",
            f"{self.p99 / self.floor:.2f}x",
            f"{p50 / self.gapped:.2f}x",
            f"{self.p99 / self.gapped:.2f}x",
            f"{p50 / self.thought:.2f}x",
            f"{self.p99 / self.thought:.2f}x",
        ]


def wire_bytes(sim: Simulator, since: int) -> int:
    """Request and reply bytes that went over the line after truth event ``since``."""
    events = sim.truth.events(("frame_received", "reply_sent"), since)
    return sum(len(bytes.fromhex(e.data["hex"])) for e in events)


def run_bus(protocol: str, baud: int, link: str, args: argparse.Namespace) -> list[Row]:
    specs = [
        BoardSpec(protocol, address, channels=CHANNELS, pulse_ms=PULSE_MS) for address in BOARDS
    ]
    configs = [
        BoardConfig(protocol, address, channels=CHANNELS, pulse_ms=PULSE_MS) for address in BOARDS
    ]
    label = f"{protocol}@{baud}"
    with Simulator(specs, wire_timing=True, reply_delay=args.reply_delay, baud=baud) as sim:
        url = sim.start_pty() if link == "pty" else sim.start_tcp("127.0.0.1", 0)
        with LockBus.open(url, protocol, baud=baud, boards=configs) as bus:
            for board in BOARDS:  # warm up: first reads open caches and wake threads
                bus.status(board)

            since = sim.truth.last_seq
            for board in BOARDS:
                bus.status(board)
            scan_floor = wire_bytes(sim, since) * BITS_PER_BYTE / baud
            gap = mandatory_gap(protocol, baud)

            scans: list[float] = []
            for i in range(args.scans):
                started = time.perf_counter()
                for board in BOARDS:
                    bus.status(board)
                scans.append(time.perf_counter() - started)
                if (i + 1) % max(1, args.scans // 4) == 0:
                    progress(f"  {label} {link}: scan {i + 1}/{args.scans}")

            sent_to_wire: list[float] = []
            round_trips: list[float] = []
            unlock_bytes = status_bytes = 0
            pulses = 0
            for j in range(args.unlocks):
                board = BOARDS[j % len(BOARDS)]
                channel = (j // len(BOARDS)) % CHANNELS + 1
                since = sim.truth.last_seq
                result = bus.unlock(board, channel)
                returned = time.monotonic()
                if result.outcome is not UnlockOutcome.OPENED:
                    raise SystemExit(f"unlock {board}/{channel}: {result.outcome}, not opened")
                frames = [
                    e
                    for e in sim.truth.events("frame_received", since)
                    if e.data["command"] in UNLOCK_COMMANDS
                ]
                pulses += len(sim.truth.events("lock_pulse", since))
                unlock_bytes = len(bytes.fromhex(frames[0].data["hex"]))
                sent_to_wire.append(frames[0].mono - result.frame_sent_at)
                round_trips.append(returned - result.frame_sent_at)
                sim.close_door(board, channel)
                if (j + 1) % max(1, args.unlocks // 4) == 0:
                    progress(f"  {label} {link}: unlock {j + 1}/{args.unlocks}")
            if pulses != args.unlocks:
                raise SystemExit(f"{pulses} lock pulses for {args.unlocks} unlocks")

            since = sim.truth.last_seq
            bus.status(BOARDS[0])
            status_bytes = wire_bytes(sim, since)

    wire_floor = unlock_bytes * BITS_PER_BYTE / baud
    trip_floor = PULSE_MS / 1000 + PULSE_MARGIN_S + status_bytes * BITS_PER_BYTE / baud
    think = args.reply_delay
    scan_gapped = scan_floor + len(BOARDS) * gap
    # An unlock the board answers has its think time before the reply, which the bus awaits
    # before the pulse; a cu48 unlock has no reply. The status read after it has one too.
    answered = get_protocol(protocol).answers_unlock
    trip_think = think * (1 + answered)
    scan_thought = scan_gapped + len(BOARDS) * think
    trip_gapped = trip_floor + gap
    trip_thought = trip_gapped + trip_think
    return [
        Row(label, link, "scan 4 boards", scans, scan_floor, scan_gapped, scan_thought),
        # The unlock frame is the first on a quiet line: its gap is already over.
        Row(label, link, "unlock frame on wire", sent_to_wire, wire_floor, wire_floor, wire_floor),
        Row(label, link, "unlock round trip", round_trips, trip_floor, trip_gapped, trip_thought),
    ]


def print_table(rows: list[Row]) -> None:
    head = ["bus", "link", "measure", "n", "p50 ms", "p99 ms", "max ms", "wire ms", "+gaps ms",
            "+think ms", "p50/wire", "p99/wire", "p50/+gaps", "p99/+gaps", "p50/+think",
            "p99/+think"]  # fmt: skip
    table = [head] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    for n, line in enumerate(table):
        print("  ".join(cell.rjust(w) if i >= 3 else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(line, widths, strict=True))))  # fmt: skip
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=200, help="full scans per bus and link")
    parser.add_argument("--unlocks", type=int, default=40, help="unlocks per bus and link")
    parser.add_argument("--links", default="pty,tcp", help="pty, tcp or both")
    parser.add_argument(
        "--reply-delay",
        type=float,
        default=BOARD_THINK_S,
        help="simulated board think time before each reply, s (the simulator's default)",
    )
    args = parser.parse_args()
    links = [link.strip() for link in args.links.split(",") if link.strip()]
    if not links or set(links) - {"pty", "tcp"} or args.scans < 1 or args.unlocks < 1:
        parser.error("--links takes pty and/or tcp; --scans and --unlocks at least 1")

    started = time.monotonic()
    load = os.getloadavg()
    rows: list[Row] = []
    for protocol, baud in BUSES:
        for link in links:
            progress(f"{protocol} at {baud} baud over {link}, 4 x {CHANNELS}-channel boards")
            rows.extend(run_bus(protocol, baud, link, args))
    print()
    print(
        f"LockBus against the simulator (wire timing on, board think time "
        f"{args.reply_delay * 1000:g} ms, pulse {PULSE_MS} ms + settle "
        f"{PULSE_MARGIN_S * 1000:g} ms); target: scan p99 <= {SCAN_TARGET}x the floor with "
        "mandatory gaps and the board's think time"
    )
    print_table(rows)
    print()
    for row in rows:
        if row.what.startswith("scan"):
            ratio = row.p99 / row.thought
            verdict = "met" if ratio <= SCAN_TARGET else "MISSED"
            print(
                f"  {row.bus} {row.link}: scan p99 {ratio:.2f}x the floor with gaps and think "
                f"time: {verdict} ({row.p99 / row.gapped:.2f}x the floor with gaps alone)"
            )
    print(
        f"\nBoard think time ({args.reply_delay * 1000:g} ms a reply) is the board's, in the "
        "third floor only. Unlock times start at the unlock frame: a bus with no poll of that "
        "board in the last second first reads it (the CLI's case; the controller polls), which "
        "comes before that instant."
    )
    print("\nWhere a scan's time above the wire floor goes, per board (4 per scan):")
    for protocol, baud in BUSES:
        gap = mandatory_gap(protocol, baud)
        print(
            f"  {protocol}@{baud}: {gap * 1000:.2f} ms mandatory silence (in the floor with "
            f"gaps) + {args.reply_delay * 1000:g} ms board think time + scheduling latency "
            "on both sides"
        )
    late = sleep_overshoot()
    print(
        f"\nThis machine's scheduling noise: a 1 ms sleep wakes late by p50 "
        f"{statistics.median(late) * 1000:.2f} ms, p99 {percentile(late, 0.99) * 1000:.2f} ms, "
        f"max {max(late) * 1000:.2f} ms; a scan waits on about 12 timers (3 an exchange: the "
        "gap, the request's and the reply's wire time)."
    )
    end_load = os.getloadavg()
    print(
        f"\nLoad average (1, 5, 15 min) at the start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
        f"at the end {end_load[0]:.2f} {end_load[1]:.2f} {end_load[2]:.2f}; "
        f"{os.cpu_count()} CPUs; {time.monotonic() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
