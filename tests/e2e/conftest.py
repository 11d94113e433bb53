"""Fixtures for the end-to-end tests: a real Mosquitto per test, fresh databases (SQLite and
PostgreSQL), cloud apps whose lifespan runs the MQTT bridge, fake and real lockers.

Built on ``tests.support`` (documented there); every fixture stops what it starts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from cloud_api.core.config import Settings
from cloud_api.core.db import make_engine
from cloud_api.main import create_app
from cloud_api.models.common import utcnow
from cloud_api.models.monitoring import LockerEventRecord
from cloud_api.models.staff import Role, Scope, Staff
from cloud_api.services import bootstrap
from cloud_api.services import staff as staff_service
from cloud_api.sms.providers import ConsoleProvider
from tests.support import mosquitto
from tests.support.api_process import ApiProcess
from tests.support.cabinet import ControllerProcess, locker_body
from tests.support.demo_run import DemoRun
from tests.support.mqtt_clients import FakeLocker
from tests.support.postgres import SqliteDatabases
from xinbao.codes import derive_locker_key

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
ADMIN_PASSWORD = "correct horse battery"
LOCKER_ID = "XA-E2E-1"


@pytest.fixture(scope="session")
def sqlite_databases(tmp_path_factory) -> SqliteDatabases:
    return SqliteDatabases(tmp_path_factory.mktemp("e2e-sqlite"))


@pytest.fixture(params=BACKENDS)
def db_url(request, sqlite_databases) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_databases.fresh()
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[mosquitto.Mosquitto]:
    if not mosquitto.available():
        pytest.fail("mosquitto is not installed: apt-get install -y mosquitto (.ci/run does)")
    b = mosquitto.Mosquitto(tmp_path / "mosquitto")
    b.start()
    yield b
    b.stop()


STAFF_PASSWORD = "a long enough password"


def enrolled_staff(engine: Engine, username: str) -> str:
    """A staff member with a confirmed TOTP (the cloud syncs only those to lockers); the
    TOTP secret. The confirmation spends the step before the current one, so a log-in with
    the current code can follow at once."""
    created = bootstrap.create_staff(engine, username, STAFF_PASSWORD, Role.staff)
    with Session(engine, expire_on_commit=False) as session:
        staff = session.get(Staff, created.id)
        staff_service.begin_totp(session, staff)
        secret = staff.totp_secret
        earlier = pyotp.TOTP(secret).at(utcnow() - timedelta(seconds=30))
        staff_service.confirm_totp(session, staff, earlier, utcnow())
    return secret


def staff_pass(cloud: Cloud, username: str, secret: str, locker_id: str = LOCKER_ID) -> str:
    """What the member does on the dashboard before a shift: log in with password and TOTP,
    then ask for a staff pass for the cabinet (POST /api/v1/staff/me/passes)."""
    # A TOTP step is taken once, and wrong codes count towards the log-in throttle: one try,
    # with the first step not spent yet (the cloud allows one step ahead for phone clocks).
    with Session(cloud.engine) as session:
        spent = session.exec(select(Staff.totp_last_step).where(Staff.username == username)).one()
    step = max(int(time.time() // 30), (spent if spent is not None else -1) + 1)
    while step > int(time.time() // 30) + 1:
        time.sleep(0.5)
    code = pyotp.TOTP(secret).at(step * 30)
    body = {"username": username, "password": STAFF_PASSWORD, "totp": code}
    r = cloud.client.post("/api/v1/staff/login", json=body)
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    r = cloud.client.post(
        "/api/v1/staff/me/passes",
        json={"locker_id": locker_id},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 201, r.text
    return r.json()["staff_pass"]


@dataclass
class Cloud:
    """One API process and helpers: in this process (a TestClient, its lifespan running the
    bridge) or a real ``xinbao api`` child (an httpx.Client on its port)."""

    client: httpx.Client
    settings: Settings
    engine: Engine
    admin: dict
    integrator: dict

    @property
    def bridge(self):
        return self.client.app.state.bridge

    def sms_inbox(self, to: str | None = None) -> list[dict]:
        """What the console SMS provider sent, newest first. An in-process app runs no
        background dispatcher (run_background=False): this sends what is due first."""
        app = getattr(self.client, "app", None)
        if app is not None:
            app.state.dispatcher.run_once()
        r = self.get(
            "/api/v1/sms/console-inbox", params={"limit": 200, **({"to": to} if to else {})}
        )
        assert r.status_code == 200, r.text
        return r.json()

    def locker_key(self, locker_id: str = LOCKER_ID) -> bytes:
        return derive_locker_key(self.settings.master_key, locker_id)

    def stored_event(self, event_id) -> LockerEventRecord | None:
        """The cloud's row for this event, if it has one (for wait_until)."""
        # A fresh session per look: on SQLite an open transaction holds the write lock.
        with Session(self.engine) as s:
            query = select(LockerEventRecord).where(LockerEventRecord.event_id == str(event_id))
            return s.exec(query).first()

    def get(self, path: str, **kw):
        return self.client.get(path, headers=self.admin, **kw)

    def post(self, path: str, json=None, headers=None):
        return self.client.post(path, json=json, headers=headers or self.admin)

    def record(self, number: str, status: str = "prereview_passed") -> dict:
        """A record in ``status`` (prereview_passed, or approved by way of the integrator's
        transitions)."""
        r = self.client.post(
            "/api/v1/records",
            headers=self.integrator,
            json={
                "application_number": number,
                "applicant_name": "王小明",
                "mobile": "+8613800138000",
                "matter_name": "食品经营许可证",
                "status": "prereview_passed",
            },
        )
        assert r.status_code == 201, r.text
        if status == "approved":
            for step in ("documents_received", "approved"):
                r = self.client.post(
                    f"/api/v1/records/{number}/transitions",
                    json={"status": step},
                    headers=self.integrator,
                )
                assert r.status_code == 200, r.text
        return r.json()

    def dropoff(self, number: str, locker_id: str = LOCKER_ID, size: str = "M") -> dict:
        r = self.client.post(
            "/api/v1/handovers/dropoff",
            headers=self.integrator,
            json={"application_number": number, "size": size, "locker_id": locker_id},
        )
        assert r.status_code == 201, r.text
        return r.json()


def _settings(db_url: str, broker_url: str, client_id: str, **extra) -> Settings:
    return Settings(
        demo=True,
        database_url=db_url,
        run_background=False,
        mqtt_url=broker_url,
        mqtt_client_id=client_id,
        mqtt_command_timeout_seconds=extra.pop("timeout", 5),
        # Staff changes reach on-line lockers within half a second instead of five.
        mqtt_staff_round_seconds=extra.pop("staff_round", 0.5),
        **extra,
    )


@pytest.fixture
def make_cloud(broker):
    """``make_cloud(db_url, broker_url, client_id, first=True)``: an API process; the first
    one of a database also creates the admin, an integrator key and the locker. (It asks for
    the broker fixture only so that the broker outlives the API processes.)"""
    opened: list[tuple[TestClient, Engine]] = []

    def make(db_url: str, broker_url: str, client_id: str = "cloud-a", first: bool = True, **kw):
        settings = _settings(db_url, broker_url, client_id, **kw)
        app = create_app(settings, sms_provider=ConsoleProvider())
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        engine = make_engine(db_url)
        opened.append((client, engine))
        cloud = connect(client, settings, engine, client_id, first)
        assert app.state.bridge.wait_connected(10), "the bridge did not connect"
        return cloud

    yield make
    for client, engine in reversed(opened):
        client.__exit__(None, None, None)
        engine.dispose()


def connect(client, settings: Settings, engine: Engine, client_id: str, first: bool) -> Cloud:
    """Log in to an API process as the admin, with an integrator key of its own; the first
    one of a database also creates the admin and registers the locker."""
    if first:
        bootstrap.create_staff(engine, "admin", ADMIN_PASSWORD, Role.admin)
    _, key = bootstrap.create_api_key(
        engine,
        f"approval system {client_id}",
        [Scope.records_write, Scope.handovers_write, Scope.lockers_read],
    )
    r = client.post("/api/v1/staff/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 200, r.text
    admin = {"Authorization": f"Bearer {r.json()['access_token']}"}
    if first:
        r = client.post("/api/v1/lockers", json=locker_body(LOCKER_ID), headers=admin)
        assert r.status_code == 201, r.text
    return Cloud(client, settings, engine, admin, {"X-API-Key": key})


@pytest.fixture
def api_processes(tmp_path, broker):
    """``start(db_url, client_id, first=True) -> (Cloud, ApiProcess)``: a real ``xinbao api``
    child (which a test may SIGKILL and start again), stopped at the end."""
    made: list[tuple[ApiProcess, httpx.Client, Engine]] = []

    def start(db_url: str, client_id: str = "cloud-a", first: bool = True):
        process = ApiProcess(
            tmp_path / "api", db_url=db_url, mqtt_url=broker.url(), client_id=client_id
        )
        process.start()
        client = httpx.Client(base_url=process.url, timeout=30)
        engine = make_engine(db_url)
        made.append((process, client, engine))
        settings = _settings(db_url, broker.url(), client_id)
        return connect(client, settings, engine, client_id, first), process

    yield start
    for process, client, engine in reversed(made):
        process.stop()
        client.close()
        engine.dispose()


@pytest.fixture
def cloud(make_cloud, db_url, broker) -> Cloud:
    return make_cloud(db_url, broker.url())


@pytest.fixture
def controller(tmp_path, sim, broker, cloud) -> Iterator[ControllerProcess]:
    """``xinbao controller`` for the cloud's locker, on the test module's own ``sim`` (a
    simulated cabinet over a pty), through the test's broker."""
    ctl = ControllerProcess.for_cabinet(
        tmp_path / "controller",
        locker_id=LOCKER_ID,
        locker_key=cloud.locker_key(),
        serial_port=sim.start_pty(),
        mqtt_port=broker.port,
    )
    ctl.start()
    yield ctl
    ctl.stop()


@pytest.fixture
def fake_locker(broker, cloud) -> Iterator[FakeLocker]:
    locker = FakeLocker(broker.port, LOCKER_ID, cloud.locker_key())
    yield locker
    locker.close()


@pytest.fixture
def run_demo(tmp_path):
    """``run_demo(*args, env=None) -> DemoRun``; whatever is still running is killed at the end."""
    runs: list[DemoRun] = []

    def start(*args: str, env: dict[str, str] | None = None) -> DemoRun:
        run = DemoRun(*args, cwd=tmp_path, env=env)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()
