"""Door closed at the simulator -> event row in the cloud database, with a whole city on line.

DESIGN.md §8: p99 <= 500 ms while a city (1,354 lockers) is connected. The production shape,
on this machine: Mosquitto (saving its database every 60 s as deploy/mosquitto does; the
tests' broker saves on every change, which a city's retained presence makes a full core's
work: --broker-save-every-change for that), PostgreSQL, two ``xinbao api`` processes (their
MQTT bridges splitting the lockers over the shared subscription), 1,353 lightweight lockers
(bench/city_fleet.py: presence, a telemetry heartbeat every 30 s as the controller's default,
commands answered) and one real cabinet: the edge controller as its own process on the
simulator over a pty. All 1,354 lockers are registered in the cloud with 40 compartments
each (the real cabinet with its own 6).

Each run forces a door open at the simulator (the controller reports ``door_forced``), waits
until the controller has seen it, shuts it, and polls the database (every 2 ms, its own
connection) until the ``door_closed`` row is there. Reported per run, from the simulator's
ground-truth instant of the close (wall clock; every process is on this machine):

- total: close -> row committed and visible (the target);
- edge: close -> the event's ``ts`` (the controller's bus polling and debounce);
- cloud: ``ts`` -> row visible (outbox, broker, bridge, ordering, commit).

Beside it, the floor: a QoS 1 message published to the same broker, under the same load,
until a subscriber on the same machine receives it.

    .venv/bin/python bench/city_bench.py --closes 200

City scale (issue 14): ``--lockers 13540`` is ten seeds' worth. The bench then says what holds
on this machine and where it stops. It prints a line every 10 s while the city connects and
while the cloud answers the arrivals' syncs (lockers on line, load average, CPU of each part
over the last 10 s); after the latency lines, a table of each part's CPU (% of one core, this
process and all its descendants, from /proc) averaged over connecting the city and over the
door closes: the broker, the API processes summed (the cloud), PostgreSQL (every
``postgres`` process: the machine's shared server, other databases' work included), the
fleet, the controller, this bench, and the rest of the machine. A city that is not all on line
within ``--connect-timeout`` is not an error: the bench says how many came, how fast, and which
part was out of CPU over the last minute (a one-thread process at a full core: the broker,
one API process's bridge, the fleet; or every core busy), then measures the door closes with
the lockers that are there. The last line sums it up: ``... : holds`` or ``...: stops at ...``.

    .venv/bin/python bench/city_bench.py --lockers 13540 --closes 200
"""

from __future__ import annotations

import argparse
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cloud_api.core.config import DEMO_MASTER_SECRET  # noqa: E402
from cloud_api.core.db import make_engine, migrate  # noqa: E402
from cloud_api.models.locker import LockerCreate  # noqa: E402
from cloud_api.services import lockers  # noqa: E402
from tests.support.api_process import ApiProcess  # noqa: E402
from tests.support.cabinet import COMPARTMENTS, ControllerProcess, locker_body, simulator  # noqa: E402
from tests.support.mosquitto import Mosquitto  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402
from xinbao.codes import derive_locker_key  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
CITY = 1354
CABINET = "XA-CITY-0001"  # the real one; the fleet is XA-CITY-0002 ...
COMPARTMENTS_PER_LOCKER = 40
SIZES = "SSSSSSSSSSSSSSSSMMMMMMMMMMMMMMMMLLLLLLLL"
TARGET_P99_MS = 500.0
CLOSE_TIMEOUT_S = 30.0  # a door_closed row later than this counts as lost
LOST_IN_A_ROW = 5  # lost closes one after the other that end the measurement
PROGRESS_EVERY_S = 10.0
SATURATED_PCT = 85.0  # of one core: a part doing its work on one thread is at its limit
MACHINE_FULL = 0.9  # of all the cores busy: the machine is out of CPU
WINDOW_S = 60.0  # what was saturated when the city stopped coming: over the last minute
CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def line(name: str, ms: list[float]) -> str:
    return (
        f"  {name:<34} p50 {pct(ms, 0.5):7.1f}  p90 {pct(ms, 0.9):7.1f}  "
        f"p99 {pct(ms, 0.99):7.1f}  max {max(ms):7.1f} ms  (n={len(ms)})"
    )


def ms(value: float) -> str:
    return f"> {CLOSE_TIMEOUT_S * 1000:.0f} ms" if math.isinf(value) else f"{value:.0f} ms"


# -- CPU, from /proc ---------------------------------------------------------------------------


@dataclass
class Sample:
    at: float  # time.monotonic()
    cpu: dict[str, float]  # CPU seconds so far, per part
    busy: float  # the machine's busy CPU seconds, every core


def processes() -> dict[int, tuple[str, int, float]]:
    """pid -> (comm, ppid, CPU seconds) of every process; its CPU is its own utime + stime and
    its reaped children's (cutime + cstime), so a part's total does not drop when one of its
    processes ends (a PostgreSQL backend, a uvicorn worker): the parent takes it over."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue  # ended meanwhile
        end = stat.rindex(")")  # comm may hold spaces and parentheses
        fields = stat[end + 2 :].split()  # fields[0] is proc(5)'s field 3 (state)
        ticks = sum(int(x) for x in fields[11:15])  # fields 14-17: utime stime cutime cstime
        out[int(entry.name)] = (stat[stat.index("(") + 1 : end], int(fields[1]), ticks / CLK_TCK)
    return out


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine, every core (/proc/stat: not idle, iowait, steal)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq = (ticks + [0] * 8)[:7]
    return (user + nice + system + irq + softirq) / CLK_TCK


class CpuMeter:
    """CPU of the bench's parts: each a process and all its descendants (found by walking the
    ppid of every /proc/<pid>/stat), ``postgres`` every process named so, ``bench`` this one."""

    def __init__(self) -> None:
        self.roots: dict[str, int] = {}  # part -> pid

    def sample(self) -> Sample:
        table = processes()
        children = defaultdict(list)
        for pid, (_, ppid, _) in table.items():
            children[ppid].append(pid)
        cpu = {}
        for name, root in self.roots.items():
            total, todo = 0.0, [root]
            while todo:
                pid = todo.pop()
                if pid in table:
                    total += table[pid][2]
                    todo += children[pid]
            cpu[name] = total
        cpu["postgres"] = sum(c for comm, _, c in table.values() if comm == "postgres")
        mine = os.times()
        cpu["bench"] = mine.user + mine.system  # not its children: they are parts of their own
        return Sample(time.monotonic(), cpu, machine_busy())


PARTS = ("broker", "cloud", "postgres", "fleet", "controller", "bench", "other")
SHORT = {
    "broker": "broker",
    "cloud": "cloud",
    "postgres": "PostgreSQL",
    "fleet": "fleet",
    "controller": "controller",
    "bench": "bench",
    "other": "other users",
    "machine": "machine",
}


def usage(a: Sample, b: Sample) -> dict[str, float]:
    """% of one core of each part between two samples; ``cloud`` the API processes summed,
    ``other`` the rest of the machine (someone else's work: the machine is shared)."""
    span = max(b.at - a.at, 1e-6)
    u = {k: max(0.0, v - a.cpu.get(k, 0.0)) / span * 100 for k, v in b.cpu.items()}
    u["machine"] = (b.busy - a.busy) / span * 100
    u["other"] = max(0.0, u["machine"] - sum(u[k] for k in b.cpu))
    u["cloud"] = sum(v for k, v in u.items() if k.startswith("api-"))
    for part in PARTS:
        u.setdefault(part, 0.0)
    return u


def saturated(u: dict[str, float]) -> tuple[str, str] | None:
    """(where it stops, what shows it) when a part was out of CPU, else None. The broker, the
    fleet and each API process's bridge do their work on one thread (Python's GIL), so one of
    them near a full core is the limit; else all the cores busy is."""
    single = {"broker": "the broker", "fleet": "the fleet (the bench's load generator)"}
    single |= {k: "the cloud" for k in u if k.startswith("api-")}
    name = max(single, key=lambda k: u.get(k, 0.0))
    if u.get(name, 0.0) >= SATURATED_PCT:
        who = f"API process {name[4:]}" if name.startswith("api-") else name
        return single[name], f"{who} at {u[name]:.0f}% of a core"
    if u["machine"] >= MACHINE_FULL * CORES * 100:
        top = max(PARTS, key=u.get)
        return "the machine's CPU", (
            f"machine {u['machine']:.0f}% busy of {CORES * 100}% ({SHORT[top]} {u[top]:.0f}%)"
        )
    return None


def busiest(u: dict[str, float]) -> str:
    top = max(PARTS, key=u.get)
    return f"busiest: {SHORT[top]} at {u[top]:.0f}% of a core, machine {u['machine']:.0f}%"


def cpu_line(u: dict[str, float]) -> str:
    return ", ".join(f"{SHORT[k]} {u[k]:.0f}" for k in ("broker", "cloud", "postgres", "fleet"))


def cpu_table(columns: list[tuple[str, dict[str, float]]], apis: int) -> None:
    labels = {
        "broker": "broker (mosquitto)",
        "cloud": f"cloud ({apis} API processes, summed)",
        "postgres": "PostgreSQL (shared server, all its databases)",
        "fleet": "fleet (lightweight lockers, one process)",
        "controller": "controller (the real cabinet)",
        "bench": "this bench (simulator, DB polling)",
        "other": "rest of the machine (other users)",
        "machine": "whole machine",
    }
    rows = ["broker", "cloud", *(f"api-{i + 1}" for i in range(apis)), *PARTS[2:], "machine"]
    print(f"\nCPU, % of one core ({CORES} cores: {CORES * 100}% is the whole machine):")
    print(f"  {'':<46}" + "".join(f"{name:>20}" for name, _ in columns))
    for row in rows:
        label = f"  API process {row[4:]}" if row.startswith("api-") else labels[row]
        print(f"  {label:<46}" + "".join(f"{u.get(row, 0.0):19.0f}%" for _, u in columns))


def memory_free_mb() -> int:
    with open("/proc/meminfo") as f:
        for text in f:
            if text.startswith("MemAvailable:"):
                return int(text.split()[1]) // 1024
    return -1


def progress(started: float, text: str, a: Sample, b: Sample) -> None:
    u = usage(a, b)
    print(
        f"  [{b.at - started:4.0f} s] {text}; load {os.getloadavg()[0]:.2f}, "
        f"{memory_free_mb():,} MB free; CPU % of a core over {b.at - a.at:.0f} s: "
        f"{cpu_line(u)}, machine {u['machine']:.0f}",
        flush=True,
    )


def window(samples: list[Sample], seconds: float) -> tuple[Sample, Sample]:
    """The last sample and the latest one at least ``seconds`` before it (else the first)."""
    end = samples[-1]
    for sample in reversed(samples[:-1]):
        if end.at - sample.at >= seconds:
            return sample, end
    return samples[0], end


# -- the fleet and the cloud, watched ---------------------------------------------------------


class FleetWatch:
    """The fleet's process and what it last said on stdout (bench/city_fleet.py's lines)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.connected = self.failed = self.dropped = 0
        self.finished: str | None = None  # its ``ready ...`` or ``held ...`` line
        self.finished_at: float | None = None
        self.errors: list[str] = []
        self.done: str | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for text in self.proc.stdout:
            text = text.strip()
            if text.startswith("status "):
                fields = dict(kv.split("=", 1) for kv in text.split()[1:])
                self.connected = int(fields["connected"])
                self.failed = int(fields["failed"])
                self.dropped = int(fields["dropped"])
            elif m := re.match(r"(ready|held) (\d+)", text):
                self.connected = int(m[2])
                self.finished, self.finished_at = text, time.monotonic()
            elif text.startswith("error "):
                self.errors.append(text[6:])
                print(f"  fleet: {text[6:]}", file=sys.stderr, flush=True)
            elif text.startswith("done"):
                self.done = text

    def hold(self) -> None:
        """No more connections: the ones there are stay."""
        try:
            self.proc.stdin.write("hold\n")
            self.proc.stdin.flush()
        except OSError:
            pass

    def describe(self) -> str:
        text = f"fleet connected {self.connected:,}"
        if self.failed or self.dropped:
            text += f" ({self.failed:,} failed, {self.dropped:,} dropped)"
        return text


class Db:
    """One connection for the bench's polling, opened again after an error (a busy server)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: psycopg.Connection | None = None

    def row(self, sql: str) -> tuple | None:
        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
            return self.conn.execute(sql).fetchone()
        except psycopg.Error as err:
            print(f"  (database poll failed: {err})", file=sys.stderr, flush=True)
            self.close()
            return None

    def value(self, sql: str, otherwise: int = -1) -> int:
        row = self.row(sql)
        return otherwise if row is None else row[0]

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class City:
    on_line: int
    seconds: float  # from the fleet's start
    complete: bool
    why: str  # why the wait ended short of the whole city ("" when it did not)
    samples: list[Sample]
    history: list[tuple[float, int]]  # (time, lockers on line)

    def rate(self, seconds: float | None = None) -> str:
        """Lockers come on line per second, over the last ``seconds`` (None: all along)."""
        t_end, n_end = self.history[-1]
        t, n = self.history[0]
        if seconds is not None:
            for then, count_then in reversed(self.history[:-1]):
                if t_end - then >= seconds:
                    t, n = then, count_then
                    break
        if t_end - t < 1:
            return "? lockers/s (under a second)"
        return f"{(n_end - n) / (t_end - t):.1f} lockers/s"


def wait_for_city(
    db: Db,
    fleet: FleetWatch,
    meter: CpuMeter,
    start: Sample,
    before: int,
    lockers: int,
    timeout: float,
) -> City:
    """Until every locker is on line in the cloud, the fleet can bring no more, or ``timeout``
    from the fleet's start (``before`` were on line then: the cabinet); a progress line every
    PROGRESS_EVERY_S."""
    samples, history = [start], [(start.at, before)]
    on_line, why = before, ""
    next_report = start.at + PROGRESS_EVERY_S
    while True:
        row = db.row("SELECT count(*) FROM locker_link WHERE online")
        if row is not None:
            on_line = row[0]
        now = time.monotonic()
        if on_line >= lockers:
            break
        if fleet.proc.poll() is not None:
            why = f"the fleet exited (code {fleet.proc.returncode})"
            break
        if fleet.finished and (fleet.failed or fleet.dropped) and on_line > fleet.connected:
            why = f"the fleet can bring no more ({fleet.describe()})"
            break
        if now - start.at >= timeout:
            why = f"timed out after {timeout:g} s"
            break
        if now >= next_report:
            sample = meter.sample()
            gained = (on_line - history[-1][1]) / max(now - history[-1][0], 1e-6)
            progress(
                start.at,
                f"on line in the cloud {on_line:,} of {lockers:,} ({gained:+.0f}/s), "
                f"{fleet.describe()}",
                samples[-1],
                sample,
            )
            samples.append(sample)
            history.append((now, on_line))
            next_report += PROGRESS_EVERY_S
        time.sleep(1)
    end = meter.sample()
    samples.append(end)
    history.append((end.at, on_line))
    return City(on_line, end.at - start.at, on_line >= lockers, why, samples, history)


def wait_for_syncs(
    db: Db, meter: CpuMeter, origin: float, timeout: float
) -> tuple[int | None, float]:
    """Until the arrival syncs are answered (none ``sent`` and none answered for 5 s) or
    ``timeout``: the commands still outstanding then (0, or None if never known) and the
    seconds waited; a progress line every PROGRESS_EVERY_S (its time from ``origin``)."""
    last = meter.sample()
    started = last.at
    next_report = started + PROGRESS_EVERY_S
    pending = None
    while True:
        row = db.row(
            "SELECT count(*) FILTER (WHERE status = 'sent'), "
            "count(*) FILTER (WHERE replied_at > now() - interval '5 seconds') "
            "FROM locker_command"
        )
        now = time.monotonic()
        if row is not None:
            pending, recent = row
            if pending == 0 and recent == 0:
                return 0, now - started
        if now - started >= timeout:
            return pending, now - started
        if now >= next_report and row is not None:
            sample = meter.sample()
            progress(
                origin,
                f"arrival syncs: {pending:,} commands sent and not answered, "
                f"{recent:,} answered in the last 5 s",
                last,
                sample,
            )
            last = sample
            next_report += PROGRESS_EVERY_S
        time.sleep(1)


def deploy_persistence(broker: Mosquitto) -> bool:
    """The broker's database saved every 60 s, as deploy/mosquitto/mosquitto.conf has it.

    The tests' broker saves it on every change (so a SIGKILLed broker keeps its sessions); a
    change is any QoS 1 message acknowledged, and a save writes every retained message: each
    locker's presence. With 6,000 lockers on line that was ~7 ms of the broker's CPU per QoS 1
    message (2,000 took 14 s against 0.05 s saved every 60 s): a city of 13,540 would stop at
    the tests' broker, not at the deployment's. False when the tests' settings were not found.
    """
    text = broker.conf.read_text()
    if "autosave_on_changes true\n" not in text or "autosave_interval 1\n" not in text:
        return False
    text = text.replace("autosave_on_changes true\n", "")
    broker.conf.write_text(text.replace("autosave_interval 1\n", "autosave_interval 60\n"))
    return True


def register_city(db_url: str, count: int) -> None:
    engine = make_engine(db_url)
    from sqlmodel import Session

    try:
        with Session(engine) as session:
            body = locker_body(CABINET)
            lockers.register(session, LockerCreate.model_validate(body), "bench")
            for n in range(2, count + 1):
                body = locker_body(f"XA-CITY-{n:04d}", lat=34.0 + n / 10_000)
                body["compartments"] = [
                    {"number": i + 1, "size": SIZES[i], "board": 1 + i // 16, "channel": 1 + i % 16}
                    for i in range(COMPARTMENTS_PER_LOCKER)
                ]
                lockers.register(session, LockerCreate.model_validate(body), "bench")
    finally:
        engine.dispose()


def broker_floor(port: int, runs: int) -> tuple[list[float], int]:
    """QoS 1 publish -> receive on the same broker, one message at a time (ms); and how many
    did not arrive within 5 s."""
    got = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="floor-sub", protocol=mqtt.MQTTv311)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="floor-pub", protocol=mqtt.MQTTv311)
    sub.on_message = lambda c, u, m: got.set()
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    try:
        sub.subscribe("bench/floor", qos=1)[1]
        time.sleep(0.5)
        out, lost = [], 0
        for _ in range(runs):
            got.clear()
            t0 = time.perf_counter()
            pub.publish("bench/floor", b"x" * 200, qos=1)
            if got.wait(5):
                out.append((time.perf_counter() - t0) * 1000)
            else:
                lost += 1
            time.sleep(0.02)
        return out, lost
    finally:
        for c in (sub, pub):
            c.disconnect()
            c.loop_stop()


def measure(db_url: str, sim, controller: ControllerProcess, closes: int) -> tuple:
    """(total, edge, cloud) in ms for each close and when it closed (s into the run); the
    number of closes tried; what went wrong with the others. The city's load may starve any
    step of a close (the controller's kiosk, the row): that close counts as lost and the next
    one goes on, unless LOST_IN_A_ROW were lost one after the other."""
    results: list[tuple] = []
    problems: list[str] = []
    tried = in_a_row = 0
    started = time.time()
    numbers = [n for n, _, _, _ in COMPARTMENTS]
    wiring = {n: (b, c) for n, _, b, c in COMPARTMENTS}
    with psycopg.connect(db_url, autocommit=True) as conn:
        last = conn.execute(
            "SELECT coalesce(max(seq), 0) FROM locker_event WHERE locker_id = %s", (CABINET,)
        ).fetchone()[0]
        for i in range(closes):
            number = numbers[i % len(numbers)]
            board, channel = wiring[number]
            tried += 1
            try:
                sim.open_door(board, channel, by="forced")
                wait_until(
                    lambda n=number: controller.status()["doors"][str(n)] is True, 10, "open"
                )
                since = sim.truth.last_seq
                sim.close_door(board, channel)
                closed_at = sim.truth.events("door_closed", since)[0].wall
                while True:
                    # The compartment too: a close lost before may still arrive late.
                    row = conn.execute(
                        "SELECT seq, ts FROM locker_event WHERE locker_id = %s AND seq > %s "
                        "AND type = 'door_closed' AND compartment = %s ORDER BY seq LIMIT 1",
                        (CABINET, last, number),
                    ).fetchone()
                    if row is not None:
                        seen = time.time()
                        break
                    if time.time() - closed_at > CLOSE_TIMEOUT_S:
                        raise RuntimeError(
                            f"door_closed not in the database after {CLOSE_TIMEOUT_S:.0f} s"
                        )
                    time.sleep(0.002)
            except (
                AssertionError,  # wait_until's timeout
                RuntimeError,
                KeyError,
                IndexError,
                httpx.HTTPError,
                psycopg.Error,
            ) as err:
                sim.close_door(board, channel)
                problems.append(f"close {i + 1} (compartment {number}): {err}")
                in_a_row += 1
                if in_a_row >= LOST_IN_A_ROW:
                    problems.append(f"{LOST_IN_A_ROW} closes lost in a row: measurement ended")
                    break
                continue
            in_a_row = 0
            last = row[0]
            ts = row[1].timestamp()
            results.append(
                (
                    (seen - closed_at) * 1000,
                    (ts - closed_at) * 1000,
                    (seen - ts) * 1000,
                    closed_at - started,
                )
            )
            try:
                wait_until(
                    lambda n=number: controller.status()["doors"][str(n)] is False, 10, "shut"
                )
            except (AssertionError, httpx.HTTPError) as err:
                problems.append(f"close {i + 1} (compartment {number}) not seen shut: {err}")
    return results, tried, problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--closes", type=int, default=200)
    parser.add_argument(
        "--lockers", type=int, default=CITY, help="the city's size, real cabinet included"
    )
    parser.add_argument("--api-processes", type=int, default=2)
    parser.add_argument(
        "--heartbeat", type=float, default=30.0, help="fleet telemetry interval (s)"
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=600.0,
        help="seconds from the fleet's start for every locker to be on line in the cloud; "
        "past it the bench reports how far the city got and measures with what is there",
    )
    parser.add_argument(
        "--sync-timeout",
        type=float,
        default=600.0,
        help="seconds for the cloud's answers to the arrivals (full syncs) to settle",
    )
    parser.add_argument(
        "--broker-save-every-change",
        action="store_true",
        help="the tests' broker persistence (the database saved on every change, as in the "
        "runs before issue 14) instead of the deployment's (every 60 s)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the logs (API, broker, controller)"
    )
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    fds = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if fds < args.lockers + 100:
        # The broker and the fleet inherit it: each holds one descriptor per locker.
        print(
            f"warning: RLIMIT_NOFILE is {fds} (hard limit {hard}): the broker and the fleet "
            f"cannot hold {args.lockers:,} connections",
            flush=True,
        )

    work = Path(tempfile.mkdtemp(prefix="xinbao-city-"))
    print(f"logs in {work} (kept with --keep)", file=sys.stderr, flush=True)
    work.chmod(0o755)  # mosquitto started as root drops to its own user
    name = f"xinbao_city_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    db_url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    broker = Mosquitto(work / "mosquitto")
    if args.broker_save_every_change:
        print("broker: the tests' persistence, its database saved on every change", flush=True)
    elif deploy_persistence(broker):
        print("broker: persistence as deployed, its database saved every 60 s", flush=True)
    else:
        print("warning: the tests' broker settings changed: its persistence is theirs", flush=True)
    apis: list[ApiProcess] = []
    fleet = controller = None
    meter = CpuMeter()
    db = Db(db_url)
    try:
        print(f"load average at start: {os.getloadavg()[0]:.2f} (2 cores shared)", flush=True)
        migrate(db_url)
        t0 = time.monotonic()
        register_city(db_url, args.lockers)
        print(f"registered {args.lockers} lockers in {time.monotonic() - t0:.0f} s", flush=True)
        broker.start()
        meter.roots["broker"] = broker.proc.pid
        for i in range(args.api_processes):
            api = ApiProcess(
                work / "api", db_url=db_url, mqtt_url=broker.url(), client_id=f"city-api-{i + 1}"
            )
            api.start()
            apis.append(api)
            meter.roots[f"api-{i + 1}"] = api.proc.pid
        with simulator() as sim:
            # The real cabinet first, on a quiet machine: the city's arrival is what is timed.
            controller = ControllerProcess.for_cabinet(
                work / "controller",
                locker_id=CABINET,
                locker_key=derive_locker_key(DEMO_MASTER_SECRET.encode(), CABINET),
                serial_port=sim.start_pty(),
                mqtt_port=broker.port,
            )
            controller.start()
            meter.roots["controller"] = controller.proc.pid
            before = db.value("SELECT count(*) FROM locker_link WHERE online", 0)
            start = meter.sample()
            fleet = FleetWatch(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(ROOT / "bench/city_fleet.py"),
                        "--port",
                        str(broker.port),
                        "--count",
                        str(args.lockers - 1),
                        "--interval",
                        str(args.heartbeat),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
            meter.roots["fleet"] = fleet.proc.pid
            print(
                f"connecting the city: {args.lockers - 1:,} lightweight lockers from one "
                f"process (timeout {args.connect_timeout:g} s)",
                flush=True,
            )
            city = wait_for_city(
                db, fleet, meter, start, before, args.lockers, args.connect_timeout
            )
            if city.complete:
                at = (
                    f"; the fleet had them all connected at {fleet.finished_at - start.at:.0f} s"
                    if fleet.finished_at is not None
                    else ""
                )
                print(f"city on line in {city.seconds:.0f} s from the fleet's start{at}")
            else:
                fleet.hold()
                last_minute = usage(*window(city.samples, WINDOW_S))
                limit = saturated(last_minute)
                print(
                    f"CITY ONLY PARTLY ON LINE: {city.on_line:,} of {args.lockers:,} lockers on "
                    f"line in the cloud after {city.seconds:.0f} s ({city.why}); "
                    f"{fleet.describe()}",
                    flush=True,
                )
                print(
                    f"  they came at {city.rate()} on average, "
                    f"{city.rate(WINDOW_S)} over the last minute",
                    flush=True,
                )
                print(
                    f"  CPU % of a core over the last minute: {cpu_line(last_minute)}, "
                    f"machine {last_minute['machine']:.0f}; "
                    + (
                        f"saturated: {limit[0]} ({limit[1]})"
                        if limit
                        else f"nothing saturated ({busiest(last_minute)})"
                    ),
                    flush=True,
                )
                print(
                    "  the fleet opens no more connections: the rest runs with what is on line",
                    flush=True,
                )
            outstanding, _ = wait_for_syncs(db, meter, start.at, args.sync_timeout)
            connected = meter.sample()
            if outstanding != 0:
                left = "an unknown number of" if outstanding is None else f"{outstanding:,}"
                print(
                    f"arrival syncs: {left} commands still outstanding after "
                    f"{args.sync_timeout:g} s: measuring all the same",
                    flush=True,
                )
            unanswered = db.value("SELECT count(*) FROM locker_command WHERE status = 'timeout'")
            on_line = db.value("SELECT count(*) FROM locker_link WHERE online", city.on_line)
            print(
                f"city {'on line' if city.complete else 'partly on line'} and "
                f"{'synced' if outstanding == 0 else 'not all synced'} in "
                f"{connected.at - start.at:.0f} s ({unanswered} commands never answered)",
                flush=True,
            )
            results, tried, problems, floor, floor_lost = [], 0, [], [], 0
            elapsed = 0.0
            closes_cpu = None
            if on_line < 1:
                print("no locker on line: no door-close measurement", flush=True)
            else:
                if not city.complete:
                    print(
                        f"measuring door closes with the city only partly on line: "
                        f"{on_line:,} of {args.lockers:,} lockers now"
                        + (" (the rest came after the timeout)" if on_line >= args.lockers else ""),
                        flush=True,
                    )
                got, lost = floor_or_nothing(broker.port)
                floor += got
                floor_lost += lost
                telemetry_before = db.value(
                    "SELECT count(*) FROM locker_link WHERE telemetry_at IS NOT NULL"
                )
                before = meter.sample()
                try:
                    results, tried, problems = measure(db_url, sim, controller, args.closes)
                except psycopg.Error as err:  # its own connection refused: a full server
                    print(f"no door-close measurement: {err}", flush=True)
                after = meter.sample()
                elapsed = after.at - before.at
                closes_cpu = usage(before, after)
                got, lost = floor_or_nothing(broker.port)
                floor += got
                floor_lost += lost
        connect_cpu = usage(start, connected)
        total, edge, cloud = ([r[i] for r in results] for i in range(3))
        missing = tried - len(results)
        p99 = pct(total + [math.inf] * missing, 0.99) if tried else None
        if tried:
            fleet_n = args.lockers - 1 if city.complete else fleet.connected
            lockers_text = (
                f"{args.lockers} lockers were connected ({fleet_n} lightweight"
                if city.complete
                else f"{on_line:,} of {args.lockers:,} lockers were on line (not all in time; "
                f"{fleet_n} lightweight connected to the broker"
            )
            print(
                f"\n{tried} door closes at {CABINET} in {elapsed:.0f} s while {lockers_text}, "
                f"heartbeat every "
                f"{args.heartbeat:g} s, ~{fleet_n / args.heartbeat:.0f} msg/s); "
                f"{args.api_processes} API processes; PostgreSQL; controller polling every 50 ms, "
                f"2 polls to debounce ({telemetry_before} lockers had sent telemetry)"
            )
            if results:
                print(line("total: close -> row visible", total))
                print(line("  edge: close -> event ts", edge))
                print(line("  cloud: event ts -> row visible", cloud))
            if floor:
                print(line("floor: broker publish -> receive", floor))
            if floor_lost:
                print(f"  floor: {floor_lost} messages not received within 5 s")
            if results:
                slowest = sorted(results, reverse=True)[:5]
                print(
                    "  slowest closes (total ms @ s into the run): "
                    + ", ".join(f"{r[0]:.0f} @ {r[3]:.0f}" for r in slowest)
                )
            if problems:
                print(
                    f"  {missing} of {tried} closes never reached the database within "
                    f"{CLOSE_TIMEOUT_S:.0f} s; {len(problems)} problems, the first: "
                    + "; ".join(problems[:3])
                )
            verdict = "meets" if p99 <= TARGET_P99_MS else "MISSES"
            print(f"target p99 <= {TARGET_P99_MS:.0f} ms: {verdict}")
        columns = [(f"connecting {connected.at - start.at:.0f} s", connect_cpu)]
        if closes_cpu is not None:
            columns.append((f"door closes {elapsed:.0f} s", closes_cpu))
        cpu_table(columns, args.api_processes)
        dropping = sorted(
            set(
                re.findall(
                    r"Outgoing messages are being dropped for client (\S+?)\.?$",
                    broker.log_text(),
                    re.M,
                )
            )
        )
        if dropping:
            # max_queued_messages (10,000 per session, as deployed) was not enough.
            print(f"broker: dropped messages it had queued for {', '.join(dropping)}")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}", flush=True)
        print(
            summary(
                args.lockers,
                city,
                outstanding,
                p99,
                missing,
                tried,
                fleet,
                dropping,
                city_cpu(city),
                closes_cpu,
            ),
            flush=True,
        )
    finally:
        db.close()
        if controller is not None:
            controller.stop()
        if fleet is not None:
            fleet.proc.stdin.close()
            try:
                fleet.proc.wait(30)
            except subprocess.TimeoutExpired:
                fleet.proc.kill()
                fleet.proc.wait(10)
            if fleet.done:
                print(f"fleet {fleet.done}", file=sys.stderr, flush=True)
        for api in apis:
            api.stop()
        broker.stop()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def floor_or_nothing(port: int) -> tuple[list[float], int]:
    """The broker floor, or nothing when the floor's clients cannot even connect."""
    try:
        return broker_floor(port, 100)
    except OSError as err:
        print(f"  floor: not measured ({err})", flush=True)
        return [], 0


def city_cpu(city: City) -> dict[str, float]:
    """CPU while the city came on line; its last minute when it did not all come."""
    return (
        usage(*window(city.samples, WINDOW_S))
        if not city.complete
        else usage(city.samples[0], city.samples[-1])
    )


def summary(
    lockers: int,
    city: City,
    outstanding: int | None,
    p99: float | None,
    missing: int,
    tried: int,
    fleet: FleetWatch,
    dropping: list[str],
    connect_cpu: dict[str, float],
    closes_cpu: dict[str, float] | None,
) -> str:
    """One line: what held, or where it stopped and what showed it."""
    if city.complete:
        head = f"{lockers:,} lockers: {lockers:,} on line in {city.seconds:.0f} s"
    else:
        head = (
            f"{lockers:,} lockers: {city.on_line:,} of {lockers:,} on line "
            f"after {city.seconds:.0f} s"
        )
    if outstanding != 0:
        left = "?" if outstanding is None else f"{outstanding:,}"
        head += f" ({left} arrival syncs still unanswered)"
    if p99 is None:
        door = "no door-close measurement"
    else:
        door = f"door→DB p99 {ms(p99)} (target {TARGET_P99_MS:.0f})"
        if missing:
            door += f", {missing} of {tried} closes lost"
    if city.complete and p99 is not None and p99 <= TARGET_P99_MS:
        return f"{head}; {door}: holds"
    if not city.complete:
        limit = saturated(connect_cpu)
        if limit is not None:
            where, what = limit
            stop = f"{what}: stops at {where}"
        elif dropping:
            stop = (
                f"the broker dropped messages queued for {', '.join(dropping)}: "
                f"stops at the broker's queues (max_queued_messages)"
            )
        elif fleet.failed or fleet.dropped:
            stop = f"{fleet.describe()}: stops at the connections ({city.why})"
        else:
            stop = f"no part out of CPU ({busiest(connect_cpu)}): stops ({city.why})"
        return f"{head}, {stop}; {door}"
    limit = saturated(closes_cpu) if closes_cpu is not None else None
    if limit is not None:
        where, what = limit
        return f"{head}; {door}, {what}: stops at {where}"
    if dropping:
        return f"{head}; {door}, the broker dropped messages for {', '.join(dropping)}: stops there"
    what = busiest(closes_cpu) if closes_cpu is not None else "no CPU figures"
    return f"{head}; {door}, no part out of CPU ({what}): stops at the door→DB target"


if __name__ == "__main__":
    main()
