"""Fixtures for the cloud API tests: every test runs on SQLite and on PostgreSQL.

Migrations run once per backend into a template (a SQLite file, a PostgreSQL template
database); each test gets a fresh copy of the SQLite file, or a PostgreSQL database holding
exactly what the template holds (``pg_databases`` in tests/conftest.py, reset between tests
rather than copied anew), so tests own their data and stay fast. PostgreSQL is the server on
127.0.0.1:5432 (user postgres, trust); databases are named ``xinbao_test_<random>`` and
dropped at the end.
"""

import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from cloud_api.core.config import Settings
from cloud_api.core.db import make_engine, migrate
from cloud_api.main import create_app
from cloud_api.models.staff import Role, Scope
from cloud_api.services import bootstrap
from cloud_api.sms.providers import ConsoleProvider
from tests.cloud_api.sms.fake_twilio import start_fake_twilio
from tests.support.postgres import PG_ADMIN

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def pg_admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="session")
def template_db(tmp_path_factory):
    """``template_db("sqlite")``: the path of a SQLite file migrated once for the run."""
    made: dict[str, str] = {}

    def get(backend: str) -> str:
        assert backend == "sqlite", "PostgreSQL databases come from pg_databases"
        if backend not in made:
            path = tmp_path_factory.mktemp("tpl") / "template.db"
            migrate(f"sqlite:///{path}")
            made[backend] = str(path)
        return made[backend]

    return get


@pytest.fixture(params=BACKENDS)
def db_url(request, template_db, tmp_path):
    if request.param == "sqlite":
        path = tmp_path / "xinbao.db"
        shutil.copy(template_db("sqlite"), path)
        yield f"sqlite:///{path}"
    else:
        yield request.getfixturevalue("pg_url")


@dataclass
class Clock:
    """A settable clock, so tests move time instead of sleeping."""

    now: datetime = field(default_factory=lambda: datetime(2025, 3, 5, 2, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(db_url) -> Settings:
    return Settings(demo=True, database_url=db_url, run_background=False)


@pytest.fixture
def console() -> ConsoleProvider:
    return ConsoleProvider()


@pytest.fixture
def app(settings, clock, console):
    return create_app(settings, sms_provider=console, clock=clock)


@pytest.fixture
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


ADMIN_PASSWORD = "correct horse battery"


@dataclass
class World:
    """A registered locker, an admin and an integrator key: what most journeys start from."""

    client: TestClient
    admin_headers: dict
    integrator_headers: dict
    locker_id: str
    locker_headers: dict


def login(client: TestClient, username: str, password: str, totp: str | None = None) -> dict:
    body = {"username": username, "password": password}
    if totp is not None:
        body["totp"] = totp
    r = client.post("/api/v1/staff/login", json=body)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def locker_body(
    locker_id: str = "xa-port-001", lat: float = 34.32, lon: float = 109.03, sizes: str = "SSMML"
) -> dict:
    return {
        "id": locker_id,
        "site": "国际港务区政务中心",
        "address": "港务大道1号",
        "latitude": lat,
        "longitude": lon,
        "compartments": [
            {"number": i + 1, "size": s, "board": 1, "channel": i + 1} for i, s in enumerate(sizes)
        ],
    }


def register_locker(client: TestClient, headers: dict, **kw) -> tuple[str, dict]:
    r = client.post("/api/v1/lockers", json=locker_body(**kw), headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["id"], {"X-Locker-Key": r.json()["locker_key"]}


@pytest.fixture
def world(client, engine) -> World:
    bootstrap.create_staff(engine, "admin", ADMIN_PASSWORD, Role.admin)
    _, key = bootstrap.create_api_key(
        engine, "approval system", [Scope.records_write, Scope.handovers_write, Scope.lockers_read]
    )
    admin = login(client, "admin", ADMIN_PASSWORD)
    locker_id, locker_headers = register_locker(client, admin)
    return World(client, admin, {"X-API-Key": key}, locker_id, locker_headers)


def make_record(
    client: TestClient,
    headers: dict,
    number: str = "XA-2025-0001",
    status: str = "prereview_passed",
    mobile: str = "+8613800138000",
) -> dict:
    r = client.post(
        "/api/v1/records",
        headers=headers,
        json={
            "application_number": number,
            "applicant_name": "王小明",
            "mobile": mobile,
            "matter_name": "食品经营许可证",
            "status": status,
        },
    )
    assert r.status_code == 201, r.text
    return r.json()


def reserve_dropoff(world: World, number: str = "XA-2025-0001") -> dict:
    """A record ``number`` (prereview passed) and a drop-off reserved for it at the world's
    locker; the new handover."""
    make_record(world.client, world.integrator_headers, number=number)
    r = world.client.post(
        "/api/v1/handovers/dropoff",
        headers=world.integrator_headers,
        json={"application_number": number, "locker_id": world.locker_id},
    )
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def fake_twilio():
    """Twilio's REST API on a local port, for the real twilio library (sms/fake_twilio.py)."""
    fake = start_fake_twilio()
    yield fake
    fake.stop()
