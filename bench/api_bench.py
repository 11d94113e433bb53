"""API benchmark: issuing a drop-off and checking a code, against a bare endpoint.

Starts uvicorn (one process) on a free loopback port, first on SQLite, then on PostgreSQL
(127.0.0.1:5432, a throw-away database), and drives it from a thread pool beside it on the
same machine. For each operation it prints requests per second and p50/p99 latency, and the
ratio to ``GET /api/v1/_bench/lockers/{id}``: the same stack (uvicorn, FastAPI, dependency
injection, a session) checking the same API key as the drop-off and doing the same single-row
locker lookup the code check starts with, and nothing else.

Drop-offs go to lockers of 40 compartments (a real cabinet's size); the codes are then checked
at those lockers, taken from the drop-off answers (handover id, locker, counter). Checks at one
locker run one at a time by design (the brute-force count is kept on the locker row), so the
checks are spread over the lockers as a city's keypads would be.

    .venv/bin/python bench/api_bench.py [--requests 400] [--concurrency 8] [--sqlite-only]

Figures are printed, never asserted: the machine is shared.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cloud_api.core.config import DEMO_MASTER_SECRET, DEMO_TOKEN_SECRET  # noqa: E402
from cloud_api.core.db import make_engine, migrate  # noqa: E402
from cloud_api.models.staff import Role, Scope  # noqa: E402
from cloud_api.services import bootstrap  # noqa: E402
from xinbao.codes import code_for, derive_locker_key  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
COMPARTMENTS_PER_LOCKER = 40
BARE = (
    "bare: API-key check + one locker row read, no service logic "
    "(GET /api/v1/_bench/lockers/{id})"
)
SERVER = """
import uvicorn
from cloud_api.core.config import load_settings
from cloud_api.main import create_app
uvicorn.run(create_app(load_settings()), host="127.0.0.1", port={port}, log_level="warning",
            access_log=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db_url: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = os.environ | {
        "DATABASE_URL": db_url,
        "XINBAO_DEMO": "1",
        # The demo makes up its secrets per process; the server must share this one's.
        "XINBAO_MASTER_SECRET": DEMO_MASTER_SECRET,
        "XINBAO_TOKEN_SECRET": DEMO_TOKEN_SECRET,
        "XINBAO_BENCH_ROUTES": "1",
        "XINBAO_RUN_BACKGROUND": "0",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen([sys.executable, "-c", SERVER.format(port=port)], env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/openapi.json", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the API server did not start")


def load(base: str, requests: list[tuple[str, str, dict, dict | None]], concurrency: int):
    """Send every request once from ``concurrency`` threads.

    Returns (req/s, latencies, failures, answers): answers[i] is the JSON body of request i
    when it succeeded, else None.
    """
    local = threading.local()
    latencies: list[float] = []
    answers: list[dict | None] = [None] * len(requests)
    failures = 0
    lock = threading.Lock()

    def one(index: int) -> None:
        nonlocal failures
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base, timeout=30)
        method, url, headers, body = requests[index]
        t0 = time.perf_counter()
        r = local.client.request(method, url, headers=headers, json=body)
        dt = time.perf_counter() - t0
        ok = r.status_code < 400
        answer = r.json() if ok else None
        if ok and answer.get("accepted") is False:
            ok = False  # a refused code counts as a failure
        with lock:
            latencies.append(dt)
            if ok:
                answers[index] = answer
            else:
                failures += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(len(requests))))
    elapsed = time.perf_counter() - started
    return len(requests) / elapsed, latencies, failures, answers


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def run_backend(name: str, db_url: str, n: int, concurrency: int) -> list[tuple]:
    migrate(db_url)
    engine = make_engine(db_url)
    bootstrap.create_staff(engine, "bench-admin", "bench password 1", Role.admin)
    _, key = bootstrap.create_api_key(
        engine, "bench", [Scope.records_write, Scope.handovers_write, Scope.lockers_write]
    )
    engine.dispose()
    api = {"X-API-Key": key}
    proc, base = start_server(db_url)
    rows = []
    try:
        with httpx.Client(base_url=base, timeout=30) as c:
            lockers = []
            for i in range(-(-n // COMPARTMENTS_PER_LOCKER)):
                body = {
                    "id": f"bench-{i}",
                    "site": "基准测试",
                    "address": "loopback",
                    "latitude": 34.3 + i / 100,
                    "longitude": 109.0,
                    "compartments": [
                        {"number": k + 1, "size": "M", "board": k // 24, "channel": k % 24 + 1}
                        for k in range(COMPARTMENTS_PER_LOCKER)
                    ],
                }
                r = c.post("/api/v1/lockers", json=body, headers=api)
                r.raise_for_status()
                lockers.append((body["id"], {"X-Locker-Key": r.json()["locker_key"]}))
            for j in range(n):
                c.post(
                    "/api/v1/records",
                    headers=api,
                    json={
                        "application_number": f"B-{j}",
                        "applicant_name": "测试",
                        "mobile": "+8613800138000",
                        "matter_name": "bench",
                        "status": "prereview_passed",
                    },
                ).raise_for_status()

        issue = [
            (
                "POST",
                "/api/v1/handovers/dropoff",
                api,
                {"application_number": f"B-{j}", "locker_id": lockers[j % len(lockers)][0]},
            )
            for j in range(n)
        ]
        bare = [
            ("GET", f"/api/v1/_bench/lockers/{lockers[j % len(lockers)][0]}", api, None)
            for j in range(n)
        ]
        load(base, bare[: min(50, n)], concurrency)  # warm-up
        bare_result = load(base, bare, concurrency)
        issue_result = load(base, issue, concurrency)

        # The codes to check come from the drop-off answers themselves: a failed drop-off
        # has nothing to check and is already counted as an issue error.
        headers_of = dict(lockers)
        checks = []
        for issued in issue_result[3]:
            if issued is None:
                continue
            locker_id, counter = issued["locker_id"], issued["code_counter"]
            code = code_for(derive_locker_key(DEMO_MASTER_SECRET.encode(), locker_id), counter)
            checks.append(
                (
                    "POST",
                    f"/api/v1/lockers/{locker_id}/codes/check",
                    headers_of[locker_id],
                    {"code": code},
                )
            )
        check_result = load(base, checks, concurrency)

        bare_rps = bare_result[0]
        for label, (rps, lat, failed, _) in (
            ("bare (see above)", bare_result),
            ("issue drop-off", issue_result),
            ("check code", check_result),
        ):
            rows.append(
                (name, label, rps, percentile(lat, 50), percentile(lat, 99), failed, rps / bare_rps)
            )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows += run_backend("sqlite", f"sqlite:///{tmp}/bench.db", args.requests, args.concurrency)
    if not args.sqlite_only:
        name = f"xinbao_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        try:
            rows += run_backend(
                "postgres",
                f"postgresql://postgres@127.0.0.1:5432/{name}",
                args.requests,
                args.concurrency,
            )
        finally:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    load1, load5, _ = os.getloadavg()
    print(
        f"\n{args.requests} requests per operation, {args.concurrency} client threads, "
        f"1 uvicorn process, {os.cpu_count()} CPUs, load average before the run "
        f"{load_before[0]:.2f}/{load_before[1]:.2f} (1/5 min), after {load1:.2f}/{load5:.2f}\n"
        f"{BARE}\n"
    )
    print(
        f"{'database':<9} {'operation':<19} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6} {'vs bare':>8}"
    )
    for db, label, rps, p50, p99, failed, ratio in rows:
        print(f"{db:<9} {label:<19} {rps:8.1f} {p50:8.1f} {p99:8.1f} {failed:6d} {ratio:8.2f}")


if __name__ == "__main__":
    main()
