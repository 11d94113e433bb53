"""API benchmark: the project's endpoints beside a plain FastAPI app doing the same work.

The peer (bench/api_peer.py) is written the way FastAPI's tutorial writes an app, on the same
database, with the same driver (psycopg 3, or sqlite3) and the same uvicorn settings (one
process, no access log). wrk, a C load generator, drives both with 8 connections, so the
client does not take the server's CPU the way Python threads would. For each operation and
each round, the peer and the project are measured one right after the other, so they see the
same load from the rest of the machine; each figure is run ``--rounds`` times and the table
gives the median and the spread (min-max).

Operations: bare (API-key check and one locker row), locker detail, nearest lockers, the
list, issue a drop-off (record lock, claim, code counter, handover, SMS outbox row, two audit
entries), check a code (locker key, locker row lock, redeem, two audit entries). Each ratio
is printed beside its target from issue 14; the SQLite drop-off p99 (8 concurrent writers)
beside its 250 ms. Last, bare, locker detail and nearest again with the project as 2 worker
processes on one port (as ``xinbao api --workers 2`` runs it): the scaling from 1 to 2 workers.

    .venv/bin/python bench/api_bench.py [--seconds 4] [--rounds 3] [--sqlite-only|--postgres-only]

wrk is the Debian package ``wrk`` (``apt-get install wrk``); this bench installs nothing.
Figures are printed, never asserted: the machine is shared.
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from api_seed import Side, seed  # noqa: E402

from cloud_api.core.config import DEMO_MASTER_SECRET, DEMO_TOKEN_SECRET  # noqa: E402
from cloud_api.core.db import make_engine, migrate  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
WRK_SCRIPT = ROOT / "bench" / "api_wrk.lua"
PEER = ROOT / "bench" / "api_peer.py"
WRK_THREADS = 2
# Most requests of a single-use kind one app could serve in a second here (the data is made
# before the run; a run that uses it all up says so instead of giving a figure).
MAX_RATE = {"issue drop-off": 250, "check a code": 500}
# (operation, target ratio to the peer or None); the SQLite drop-off p99 has its own target.
OPERATIONS = [
    ("bare", 0.9),
    ("locker detail", 0.7),
    ("nearest", 0.7),
    ("list", None),
    ("issue drop-off", 0.35),
    ("check a code", 0.5),
]
SQLITE_WRITER_P99_MS = 250
PROJECT_SERVER = """
import uvicorn
from cloud_api.core.config import load_settings
from cloud_api.main import create_app
uvicorn.run(create_app(load_settings()), host="127.0.0.1", port={port}, log_level="warning",
            access_log=False)
"""
# The project as `xinbao api --workers 2` serves it (cloud_api/cli.py's serve_workers), with
# the same uvicorn settings as above.
WORKERS_SERVER = """
from cloud_api.cli import serve_workers
from cloud_api.core.config import load_settings
serve_workers(load_settings(), "127.0.0.1", {port}, {count}, log_level="warning",
              access_log=False)
"""
# The read operations measured again with 2 worker processes, for the scaling from 1 to 2.
SCALED = ("bare", "locker detail", "nearest")


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # HTTP >= 400, socket errors and timeouts, refused codes
    exhausted: bool


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(
    argv: list[str], env: dict, probe: str, root: Path = ROOT, **fill
) -> tuple[subprocess.Popen, str, int]:
    port = free_port()
    proc = subprocess.Popen(
        [a.format(port=port, **fill) for a in argv], env=env | {"PYTHONPATH": str(root)}, cwd=root
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + probe, timeout=2).status_code < 500:
                return proc, base, port
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{argv[-1]} did not start")


def lua_requests(path: Path, requests: list[tuple]) -> None:
    """The requests as a Lua chunk for api_wrk.lua (long brackets: no escaping needed)."""

    def q(value: str | None) -> str:
        return "nil" if value is None else f"[==[{value}]==]"

    with path.open("w") as out:
        out.write("return {\n")
        for method, url, header, value, body in requests:
            out.write(f"{{{q(method)},{q(url)},{q(header)},{q(value)},{q(body)}}},\n")
        out.write("}\n")


def wrk(base: str, script: Path, seconds: float, connections: int, mode: str) -> Run:
    argv = [
        "wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s",
        "-s", str(WRK_SCRIPT), base, "--", str(script), str(WRK_THREADS), *mode.split(),
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result: {out.stdout[-500:]} {out.stderr[-500:]}")
    n, duration_us, status, socket_errors, p50, p99, refused, exhausted = map(int, line.split()[1:])
    return Run(
        n / (duration_us / 1e6), p50 / 1000, p99 / 1000, status + socket_errors + refused,
        bool(exhausted),
    )  # fmt: skip


def request_sets(side: Side) -> dict[str, tuple[list[tuple], str]]:
    """Per operation: the requests (method, path, header, value, body) and the wrk mode."""
    key = ("X-API-Key", side.api_key)
    city = [f"city-{i}" for i in range(20)]
    spots = [(34.2 + (i % 17) / 40, 108.9 + (i % 13) / 40) for i in range(200)]
    return {
        "bare": ([("GET", f"/api/v1/_bench/lockers/{c}", *key, None) for c in city], "cycle"),
        "locker detail": ([("GET", f"/api/v1/lockers/{c}", *key, None) for c in city], "cycle"),
        "nearest": (
            [
                ("GET", f"/api/v1/lockers/nearest?latitude={la:.4f}&longitude={lo:.4f}", *key, None)
                for la, lo in spots
            ],
            "cycle",
        ),
        "list": ([("GET", "/api/v1/lockers", *key, None)], "cycle"),
        "issue drop-off": (
            [
                (
                    "POST",
                    "/api/v1/handovers/dropoff",
                    *key,
                    f'{{"application_number":"{record}","locker_id":"{locker}"}}',
                )
                for record, locker in side.dropoffs
            ],
            "once",
        ),
        "check a code": (
            [
                (
                    "POST",
                    f"/api/v1/lockers/{locker}/codes/check",
                    "X-Locker-Key",
                    locker_key,
                    f'{{"code":"{code}"}}',
                )
                for locker, locker_key, code in side.checks
            ],
            "once accepted",
        ),
    }  # fmt: skip


def run_database(name: str, db_url: str, args, tmp: Path) -> dict:
    """{(operation, side): [Run per round]} and the load average around the runs."""
    migrate(db_url)
    engine = make_engine(db_url)
    single_use = args.rounds * (args.seconds + 1)
    sides = seed(
        engine,
        DEMO_MASTER_SECRET.encode(),
        int(single_use * MAX_RATE["issue drop-off"]),
        int(single_use * MAX_RATE["check a code"]),
    )
    engine.dispose()
    env = os.environ | {
        "DATABASE_URL": db_url,
        "XINBAO_DEMO": "1",
        "XINBAO_MASTER_SECRET": DEMO_MASTER_SECRET,
        "XINBAO_TOKEN_SECRET": DEMO_TOKEN_SECRET,
        "XINBAO_BENCH_ROUTES": "1",
        "XINBAO_RUN_BACKGROUND": "0",
    }
    scripts = {}  # (operation, side) -> per round: (request file, wrk mode)
    for side in sides:
        for op, (requests, mode) in request_sets(side).items():
            for r in range(args.rounds):
                path = tmp / f"{name}-{side.name}-{op.replace(' ', '_')}-{r}.lua"
                if mode.startswith("once"):  # each round its own share: nothing sent twice
                    share = len(requests) // args.rounds
                    lua_requests(path, requests[r * share : (r + 1) * share])
                else:
                    lua_requests(path, requests)
                scripts.setdefault((op, side.name), []).append((path, mode))
    constant = tmp / "constant.lua"
    lua_requests(constant, [("GET", "/constant", "Accept", "*/*", None)])
    results: dict = {}
    servers: dict = {}
    try:
        servers["project"] = start(
            [sys.executable, "-c", PROJECT_SERVER], env, "/openapi.json", args.project_root
        )
        servers["peer"] = start([sys.executable, str(PEER), "{port}"], env, "/constant")
        load_before = os.getloadavg()
        for side in ("peer", "project"):  # warm-up: imports, pools, caches
            path, mode = scripts["bare", side][0]
            wrk(servers[side][1], path, 1, args.connections, mode)
        for r in range(args.rounds):
            run = wrk(servers["peer"][1], constant, args.seconds, args.connections, "cycle")
            results.setdefault(("constant", "peer"), []).append(run)
            for op, _target in OPERATIONS:
                for side in ("peer", "project"):
                    path, mode = scripts[op, side][r]
                    run = wrk(servers[side][1], path, args.seconds, args.connections, mode)
                    results.setdefault((op, side), []).append(run)
                    print(
                        f"  {name} {op:<15} {side:<8} {run.rps:8.1f} req/s  p50 {run.p50_ms:7.1f}"
                        f"  p99 {run.p99_ms:7.1f} ms  errors {run.errors}",
                        flush=True,
                    )
        load_after = os.getloadavg()
        # The same app once more, as 2 worker processes; the single one is stopped first.
        stop(servers.pop("project"))
        servers["workers"] = start(
            [sys.executable, "-c", WORKERS_SERVER], env, "/openapi.json", args.project_root,
            count=2,
        )  # fmt: skip
        path, mode = scripts["bare", "project"][0]
        wrk(servers["workers"][1], path, 1, args.connections, mode)  # warm up both workers
        for r in range(args.rounds):
            for op in SCALED:
                path, mode = scripts[op, "project"][r]
                run = wrk(servers["workers"][1], path, args.seconds, args.connections, mode)
                results.setdefault((op, "2 workers"), []).append(run)
                print(
                    f"  {name} {op:<15} 2 workers {run.rps:8.1f} req/s  p99 {run.p99_ms:7.1f} ms"
                    f"  errors {run.errors}",
                    flush=True,
                )
    finally:
        for server in servers.values():
            stop(server)
    return {"results": results, "load": (load_before, load_after)}


def stop(server: tuple[subprocess.Popen, str, int]) -> None:
    proc = server[0]
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    low, mid, high = (fmt.format(f(values)) for f in (min, statistics.median, max))
    return f"{mid} ({low}-{high})"


def report(name: str, measured: dict, args) -> None:
    results = measured["results"]
    (b1, b5, _), (a1, a5, _) = measured["load"]
    print(
        f"\n{name}: {args.rounds} rounds of {args.seconds} s per figure, wrk {WRK_THREADS} threads "
        f"{args.connections} connections, 1 uvicorn process per app, {os.cpu_count()} CPUs, "
        f"load average {b1:.1f}/{b5:.1f} (1/5 min) before, {a1:.1f}/{a5:.1f} after"
    )
    const = [r.rps for r in results["constant", "peer"]]
    print(f"uvicorn serving a constant answer (peer /constant): {spread(const)} req/s")
    print(
        f"{'operation':<15} {'app':<8} {'req/s median (min-max)':>24} {'p50 ms':>8} "
        f"{'p99 ms':>14} {'err':>4} {'ratio (min-max)':>18} {'target':>7}"
    )
    for op, target in OPERATIONS:
        peer, project = results[op, "peer"], results[op, "project"]
        ratios = [mine.rps / theirs.rps for mine, theirs in zip(project, peer, strict=True)]
        for side, runs in (("peer", peer), ("project", project)):
            cut = (
                " (ran out of prepared requests: not a full run)"
                if any(r.exhausted for r in runs)
                else ""
            )
            ratio = spread(ratios, "{:.2f}") if side == "project" else ""
            goal = ""
            if side == "project" and target is not None:
                goal = f">={target}"
            print(
                f"{op:<15} {side:<8} {spread([r.rps for r in runs]):>24} "
                f"{spread([r.p50_ms for r in runs], '{:.1f}'):>8} "
                f"{spread([r.p99_ms for r in runs]):>14} {sum(r.errors for r in runs):>4} "
                f"{ratio:>18} {goal:>7}{cut}"
            )
    print(
        f"scaling from 1 to 2 API worker processes ({os.cpu_count()} CPUs, wrk on the same "
        "machine), req/s median (min-max):"
    )
    for op in SCALED:
        one, two = results[op, "project"], results[op, "2 workers"]
        gain = [b.rps / a.rps for a, b in zip(one, two, strict=True)]
        print(
            f"  {op:<15} 1 worker {spread([r.rps for r in one]):>18}   2 workers "
            f"{spread([r.rps for r in two]):>18}   x{spread(gain, '{:.2f}')}"
        )
    if name == "SQLite":
        p99 = [r.p99_ms for r in results["issue drop-off", "project"]]
        print(
            f"SQLite p99 of the project's drop-offs, 8 concurrent writers: {spread(p99)} ms "
            f"(target <= {SQLITE_WRITER_P99_MS} ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--project-root",
        type=Path,
        default=ROOT,
        help="serve the project from this checkout (e.g. an export of main, for before/after)",
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--sqlite-only", action="store_true")
    only.add_argument("--postgres-only", action="store_true")
    args = parser.parse_args()
    # Stopped with SIGTERM: still stop the servers and drop the database (finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped"))
    if shutil.which("wrk") is None:
        sys.exit(
            "bench/api_bench.py needs wrk, a C load generator (Debian/Ubuntu: "
            "apt-get install wrk; macOS: brew install wrk). It installs nothing itself."
        )

    measured = {}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.postgres_only:
            measured["SQLite"] = run_database(
                "SQLite", f"sqlite:///{tmp}/bench.db", args, Path(tmp)
            )
        if not args.sqlite_only:
            name = f"xinbao_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            try:
                measured["PostgreSQL"] = run_database(
                    "PostgreSQL", f"postgresql://postgres@127.0.0.1:5432/{name}", args, Path(tmp)
                )
            finally:
                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    for name, figures in measured.items():
        report(name, figures, args)


if __name__ == "__main__":
    main()
