"""``xinbao api --workers 2`` on PostgreSQL with a real Mosquitto and the fake Twilio: what
every worker runs once (the first admin, the SMS dispatcher, the scheduler, the MQTT bridge
and its chores, the audit checkpoints) happens once per thing, not once per worker; both
workers share the lockers' messages through the shared subscription, each with a client id
of its own; and whichever worker answers a scrape reports the counts of both.

Without the fixes this test came with, the second worker's first-admin insert failed its
start-up (and uvicorn stopped the whole service), both workers pinged every on-line locker
at each view round, and every checkpoint was written twice.
"""

import json
import os
import secrets
import subprocess
import sys
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update
from sqlmodel import Session

from cloud_api.core.config import Settings
from cloud_api.core.db import make_engine
from cloud_api.models.audit import AuditEntry
from cloud_api.models.common import utcnow
from cloud_api.models.handover import Handover
from cloud_api.models.monitoring import LockerCommand, LockerEventRecord, LockerLink
from cloud_api.models.staff import Role, Staff
from cloud_api.services import bootstrap
from cloud_api.sms.models import SmsMessage
from cloud_api.workers import worker_client_id
from tests.cloud_api.conftest import locker_body
from tests.cloud_api.sms.fake_twilio import start_fake_twilio
from tests.support import mosquitto
from tests.support.child_process import ServiceProcess
from tests.support.metrics import samples
from tests.support.mqtt_clients import FakeLocker
from tests.support.waiting import free_port, wait_until
from xinbao.codes import derive_locker_key

ADMIN = ("first-admin", "first admin password")
CLIENT_ID = "cloud-workers"
MASTER = secrets.token_urlsafe(32)
METRICS_TOKEN = secrets.token_urlsafe(32)
DROPOFFS = 6
PINGED = ["XA-W-P1", "XA-W-P2", "XA-W-P3"]
EVENTS = 20


class WorkersApi(ServiceProcess):
    what = "xinbao api --workers 2"
    start_timeout_s = 90.0
    stop_timeout_s = 30.0

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(workdir / "api.log", self.url + "/openapi.json")
        self._env = env

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "xinbao.cli",
            "api",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "2",
        ]

    def env(self) -> dict[str, str]:
        return self._env


@pytest.fixture
def broker(tmp_path):
    b = mosquitto.Mosquitto(tmp_path / "mosquitto")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def twilio():
    fake = start_fake_twilio()
    yield fake
    fake.stop()


def production_env(db_url: str, broker, twilio, checkpoints: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XINBAO_", "PROMETHEUS_"))}
    return env | {
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": db_url,
        "XINBAO_MASTER_SECRET": MASTER,
        "XINBAO_TOKEN_SECRET": secrets.token_urlsafe(32),
        "XINBAO_METRICS_TOKEN": METRICS_TOKEN,
        "XINBAO_FIRST_ADMIN_USERNAME": ADMIN[0],
        "XINBAO_FIRST_ADMIN_PASSWORD": ADMIN[1],
        "XINBAO_MQTT_URL": broker.url(),
        "XINBAO_MQTT_CLIENT_ID": CLIENT_ID,
        "XINBAO_MQTT_SHARED": "on",
        "XINBAO_MQTT_VIEW_ROUND_SECONDS": "1",
        "XINBAO_MQTT_STAFF_ROUND_SECONDS": "0.5",
        "XINBAO_MQTT_COMMAND_TIMEOUT_SECONDS": "30",
        "XINBAO_SCHEDULER_INTERVAL_SECONDS": "0.2",
        "XINBAO_SMS_INTERVAL_SECONDS": "0.2",
        "XINBAO_AUDIT_CHECKPOINT_FILE": str(checkpoints),
        "XINBAO_AUDIT_CHECKPOINT_SECONDS": "0.3",
        "XINBAO_SMS_PROVIDER": "twilio",
        "XINBAO_SMS_TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "XINBAO_SMS_TWILIO_AUTH_TOKEN": "test-token",
        "XINBAO_SMS_TWILIO_FROM": "+15005550006",
        "XINBAO_SMS_TWILIO_API_BASE": twilio.base,
        "XINBAO_SMS_POLL_INTERVAL_SECONDS": "0.2",
    }


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """One scrape on a connection of its own (a kept-alive one stays with one worker)."""
    r = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert r.status_code == 200, r.text
    return samples(r.text)


def total(samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


@pytest.mark.slow
@pytest.mark.postgres
def test_two_workers_do_each_thing_once(pg_url, broker, twilio, tmp_path):
    checkpoints = tmp_path / "checkpoints.jsonl"
    api = WorkersApi(tmp_path, production_env(pg_url, broker, twilio, checkpoints))
    engine = make_engine(pg_url)
    http = httpx.Client(base_url=api.url, timeout=30)
    locker = None
    api.start()
    try:
        r = http.post("/api/v1/staff/login", json={"username": ADMIN[0], "password": ADMIN[1]})
        assert r.status_code == 200, r.text
        admin = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = http.post(
            "/api/v1/api-keys",
            json={"name": "approval system", "scopes": ["records:write", "handovers:write"]},
            headers=admin,
        )
        assert r.status_code == 201, r.text
        integrator = {"X-API-Key": r.json()["key"]}
        for locker_id in ["XA-W-D", "XA-W-EV", *PINGED]:
            body = locker_body(locker_id=locker_id, sizes="S" * DROPOFFS)
            r = http.post("/api/v1/lockers", json=body, headers=admin)
            assert r.status_code == 201, r.text

        # The dispatchers: every code SMS sent once.
        handovers = []
        for n in range(DROPOFFS):
            number = f"XA-W-{n:04d}"
            r = http.post(
                "/api/v1/records",
                headers=integrator,
                json={
                    "application_number": number,
                    "applicant_name": "王小明",
                    "mobile": "+8613800138000",
                    "matter_name": "食品经营许可证",
                    "status": "prereview_passed",
                },
            )
            assert r.status_code == 201, r.text
            r = http.post(
                "/api/v1/handovers/dropoff",
                headers=integrator,
                json={"application_number": number, "locker_id": "XA-W-D", "size": "S"},
            )
            assert r.status_code == 201, r.text
            handovers.append(r.json()["id"])
        wait_until(lambda: len(twilio.creates()) >= DROPOFFS, 30, "the code SMS sent")

        # The schedulers: every expired reservation expired once.
        with Session(engine) as s:
            s.execute(
                update(Handover)
                .where(Handover.id.in_(handovers))
                .values(expires_at=utcnow() - timedelta(minutes=1))
            )
            s.commit()

        def expired() -> int:
            with Session(engine) as s:
                states = s.scalars(select(Handover.state).where(Handover.id.in_(handovers)))
                return sum(1 for state in states if state == "expired")

        wait_until(lambda: expired() == DROPOFFS, 30, "the reservations expired")

        # The view round: three lockers on line, each pinged once a round, not once per
        # worker (their rounds start together).
        with Session(engine) as s:
            for locker_id in PINGED:
                s.add(LockerLink(locker_id=locker_id, online=True, last_seen_at=utcnow()))
            s.commit()

        def pings() -> dict[str, list]:
            with Session(engine) as s:
                rows = s.execute(
                    select(LockerCommand.locker_id, LockerCommand.issued_at)
                    .where(LockerCommand.type == "ping")
                    .order_by(LockerCommand.issued_at)
                ).all()
            found: dict[str, list] = {}
            for locker_id, at in rows:
                found.setdefault(locker_id, []).append(at)
            return found

        wait_until(lambda: all(len(pings().get(lk, [])) >= 3 for lk in PINGED), 30, "three rounds")

        # The bridges: both workers take the lockers' messages off the shared subscription.
        locker = FakeLocker(broker.port, "XA-W-EV", derive_locker_key(MASTER.encode(), "XA-W-EV"))
        sent = {str(locker.event("door_closed", compartment=1).event_id) for _ in range(EVENTS)}

        def applied() -> list[LockerEventRecord]:
            with Session(engine) as s:
                return list(
                    s.scalars(
                        select(LockerEventRecord).where(LockerEventRecord.locker_id == "XA-W-EV")
                    )
                )

        wait_until(
            lambda: sum(1 for e in applied() if e.outcome != "pending") == EVENTS,
            30,
            "the events applied",
        )
        scrapes = [scrape(api.url) for _ in range(8)]
        with Session(engine) as s:
            sms = list(s.scalars(select(SmsMessage)))
            staff = list(s.scalars(select(Staff)))
            audit = list(s.scalars(select(AuditEntry)))
            staff_lists = Counter(
                s.scalars(
                    select(LockerCommand.locker_id).where(LockerCommand.type == "staff_credentials")
                )
            )
    finally:
        if locker is not None:
            locker.close()
        http.close()
        api.stop()
        engine.dispose()

    log = api.log.read_text()
    # Neither worker's MQTT session was taken over by the other (one client id each).
    assert "already connected" not in broker.log.read_text()
    # Both workers served, and none failed its start-up.
    assert log.count("Application startup complete") == 2, log[-3000:]
    assert "failed to start" not in log and "Traceback" not in log, log[-3000:]

    # One first admin, created once.
    assert [s.username for s in staff] == [ADMIN[0]]
    assert sum(1 for e in audit if e.action == "staff.created") == 1

    # Each SMS sent once: one provider call per message, every message sent.
    creates = twilio.creates()
    assert len(creates) == DROPOFFS == len(sms)
    assert {m.status for m in sms} == {"sent"}
    assert len({m.provider_sid for m in sms}) == DROPOFFS

    # Each reservation expired once: one state change and one revocation in the trail each.
    for hid in handovers:
        subject = f"handover:{hid}"
        expiries = [e for e in audit if e.subject == subject and e.detail.get("to") == "expired"]
        revoked = [e for e in audit if e.subject == subject and e.action == "code.revoked"]
        assert len(expiries) == len(revoked) == 1, (hid, expiries, revoked)

    # One ping per locker per view round (1 s), never two at once from two workers.
    for locker_id, times in pings().items():
        gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
        assert min(gaps) >= 0.5, (locker_id, gaps)
    # One staff list per on-line locker (it did not change).
    assert all(staff_lists[lk] == 1 for lk in PINGED), staff_lists

    # Every event applied once, by both workers between them, each with its own client id.
    rows = applied()
    assert {e.event_id for e in rows} == sent
    assert {e.received_by for e in rows} == {f"{CLIENT_ID}-w0", f"{CLIENT_ID}-w1"}

    # Whichever worker answered a scrape, it counted both workers' events (each worker
    # applied only its share: the total is the sum of both).
    for found in scrapes:
        assert total(found, "xinbao_events_ingested_total") == EVENTS
        assert found[("xinbao_backlog_depth", (("queue", "sms"),))] == 0

    # One checkpoint line per head: never the same head twice, never an older after a newer.
    seqs = [json.loads(line)["seq"] for line in checkpoints.read_text().splitlines() if line]
    assert seqs and seqs == sorted(set(seqs)), seqs


@pytest.mark.slow
def test_the_workers_share_the_demo_secrets(tmp_path):
    """Demo mode makes its secrets up per process; with two workers they must be one set,
    or a code issued by one worker would not check at the other. A cabinet's key from the
    shared master opens the locker API at whichever worker answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XINBAO_", "PROMETHEUS_"))}
    db = tmp_path / "demo.db"
    api = WorkersApi(tmp_path, env | {"DATABASE_URL": f"sqlite:///{db}", "XINBAO_DEMO": "1"})
    api.start()
    try:
        with httpx.Client(base_url=api.url, timeout=30) as http:
            # Tokens signed by one worker are accepted by the other: many tries reach both.
            engine = make_engine(f"sqlite:///{db}")
            try:
                bootstrap.create_staff(engine, "admin", "correct horse battery", Role.admin)
            finally:
                engine.dispose()
            r = http.post(
                "/api/v1/staff/login",
                json={"username": "admin", "password": "correct horse battery"},
            )
            assert r.status_code == 200, r.text
            headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
            # A connection each: a kept-alive one would stay with one worker.
            answers = Counter(
                httpx.get(api.url + "/api/v1/lockers", headers=headers).status_code
                for _ in range(30)
            )
            assert answers == {200: 30}, answers
    finally:
        api.stop()
    assert api.log.read_text().count("Application startup complete") == 2


@pytest.mark.slow
def test_slot_numbers_are_stable_and_distinct(tmp_path):
    assert worker_client_id("x" * 64, 1) == "x" * 61 + "-w1"

    # Two processes claim two slots; a third waits, then takes the slot the first let go.
    script = (
        "import sys, time; from pathlib import Path; from cloud_api.workers import claim_slot;"
        "print(claim_slot(Path(sys.argv[1]), 2), flush=True); time.sleep(float(sys.argv[2]))"
    )
    first = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path), "1.5"], stdout=subprocess.PIPE, text=True
    )
    second = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path), "3"], stdout=subprocess.PIPE, text=True
    )
    try:
        got = {first.stdout.readline().strip(), second.stdout.readline().strip()}
        assert got == {"0", "1"}
        third = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path), "0"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert third.stdout.strip() in got
    finally:
        for proc in (first, second):
            proc.wait(30)
            proc.stdout.close()


@pytest.mark.postgres
def test_workers_starting_together_create_one_first_admin(pg_url):
    """Each worker's lifespan creates the first admin if no account exists: two at once
    both see none (the password hash takes long enough), one insert loses. It must find the
    account and go on: a failed start-up makes uvicorn stop every worker."""
    settings = Settings(
        demo=True,
        database_url=pg_url,
        first_admin_username=ADMIN[0],
        first_admin_password=ADMIN[1],
    )
    engines = [make_engine(pg_url) for _ in range(2)]
    barrier = threading.Barrier(2)
    outcomes: list = []

    def start(engine) -> None:
        barrier.wait()
        try:
            outcomes.append(bootstrap.ensure_first_admin(engine, settings))
        except Exception as err:  # noqa: BLE001 - the failure is what the test looks for
            outcomes.append(err)

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for engine in engines:
        engine.dispose()
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert sorted(o is None for o in outcomes) == [False, True]


def _workers_of(parent: int) -> set[int]:
    """The uvicorn workers of ``parent`` (multiprocessing's spawned children, not its
    resource tracker)."""
    found = set()
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    for pid in map(int, children):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            found.add(pid)
    return found


@pytest.mark.slow
def test_a_killed_worker_is_replaced_in_its_slot_and_its_counts_stay(broker, tmp_path):
    """SIGKILL one worker: uvicorn starts another, which takes the dead one's slot (so the
    same MQTT client id and persistent session, no take-over of the live worker's), and the
    requests the dead worker counted are still in the scrape (its metrics file stays)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XINBAO_", "PROMETHEUS_"))}
    env |= {
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'api.db'}",
        "XINBAO_MASTER_SECRET": MASTER,
        "XINBAO_TOKEN_SECRET": secrets.token_urlsafe(32),
        "XINBAO_METRICS_TOKEN": METRICS_TOKEN,
        "XINBAO_MQTT_URL": broker.url(),
        "XINBAO_MQTT_CLIENT_ID": "cloud-r",
        "XINBAO_MQTT_SHARED": "on",
    }
    api = WorkersApi(tmp_path, env)
    ids = {"cloud-r-w0", "cloud-r-w1"}

    def connects() -> list[str]:
        log = broker.log.read_text() if broker.log.exists() else ""
        return [c for c in ids for _ in range(log.count(f" as {c} "))]

    api.start()
    try:
        wait_until(lambda: set(connects()) == ids, 60, "both workers on the broker")
        workers = _workers_of(api.proc.pid)
        assert len(workers) == 2, workers
        for _ in range(6):
            assert httpx.get(api.url + "/openapi.json").status_code == 200
        openapi = (
            "xinbao_http_requests_total",
            (("method", "GET"), ("route", "/openapi.json"), ("status", "200")),
        )
        before = scrape(api.url)[openapi]
        assert before >= 6
        victim = sorted(workers)[0]
        os.kill(victim, 9)
        wait_until(
            lambda: len(_workers_of(api.proc.pid) - workers) == 1 and len(connects()) == 3,
            90,
            "a new worker, connected under a slot's id",
        )
        assert set(connects()) == ids  # the new one took a freed slot, not a third id
        assert scrape(api.url)[openapi] >= before
    finally:
        api.stop()
    assert "already connected" not in broker.log.read_text()
