"""Fixtures for the end-to-end tests: a real Mosquitto per test, fresh databases (SQLite and
PostgreSQL), cloud apps whose lifespan runs the MQTT bridge, fake and real lockers.

Built on ``tests.support`` (documented there); every fixture stops what it starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from cloud_api.core.config import Settings
from cloud_api.core.db import make_engine
from cloud_api.main import create_app
from cloud_api.models.staff import Role, Scope
from cloud_api.services import bootstrap
from cloud_api.sms.providers import ConsoleProvider
from tests.support import mosquitto
from tests.support.cabinet import locker_body
from tests.support.mqtt_clients import FakeLocker
from tests.support.postgres import PgDatabases, SqliteDatabases
from xinbao.codes import derive_locker_key

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
ADMIN_PASSWORD = "correct horse battery"
LOCKER_ID = "XA-E2E-1"


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases]:
    dbs = PgDatabases()
    yield dbs
    dbs.close()


@pytest.fixture(scope="session")
def sqlite_databases(tmp_path_factory) -> SqliteDatabases:
    return SqliteDatabases(tmp_path_factory.mktemp("e2e-sqlite"))


@pytest.fixture(params=BACKENDS)
def db_url(request, pg_databases, sqlite_databases) -> str:
    if request.param == "sqlite":
        return sqlite_databases.fresh()
    return pg_databases.fresh()


@pytest.fixture
def pg_url(pg_databases) -> str:
    return pg_databases.fresh()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[mosquitto.Mosquitto]:
    if not mosquitto.available():
        pytest.fail("mosquitto is not installed: apt-get install -y mosquitto (.ci/run does)")
    b = mosquitto.Mosquitto(tmp_path / "mosquitto")
    b.start()
    yield b
    b.stop()


@dataclass
class Cloud:
    """One API process: its TestClient (lifespan running, so the bridge too) and helpers."""

    client: TestClient
    settings: Settings
    engine: Engine
    admin: dict
    integrator: dict

    @property
    def bridge(self):
        return self.client.app.state.bridge

    def locker_key(self, locker_id: str = LOCKER_ID) -> bytes:
        return derive_locker_key(self.settings.master_key, locker_id)

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
        if first:
            bootstrap.create_staff(engine, "admin", ADMIN_PASSWORD, Role.admin)
        _, key = bootstrap.create_api_key(
            engine,
            f"approval system {client_id}",
            [Scope.records_write, Scope.handovers_write, Scope.lockers_read],
        )
        r = client.post(
            "/api/v1/staff/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
        assert r.status_code == 200, r.text
        admin = {"Authorization": f"Bearer {r.json()['access_token']}"}
        if first:
            r = client.post("/api/v1/lockers", json=locker_body(LOCKER_ID), headers=admin)
            assert r.status_code == 201, r.text
        assert app.state.bridge.wait_connected(10), "the bridge did not connect"
        return Cloud(client, settings, engine, admin, {"X-API-Key": key})

    yield make
    for client, engine in reversed(opened):
        client.__exit__(None, None, None)
        engine.dispose()


@pytest.fixture
def cloud(make_cloud, db_url, broker) -> Cloud:
    return make_cloud(db_url, broker.url())


@pytest.fixture
def fake_locker(broker, cloud) -> Iterator[FakeLocker]:
    locker = FakeLocker(broker.port, LOCKER_ID, cloud.locker_key())
    yield locker
    locker.close()
