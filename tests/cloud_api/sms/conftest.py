"""Fixtures for the SMS tests: a database (SQLite file and PostgreSQL), a fake Twilio, a clock.

Only the SMS table is created here, from the model: the core's alembic migration owns the real
schema. PostgreSQL gets a fresh database for the run (``xinbao_sms_test_<random>``), dropped at
the end; each test empties the table.
"""

import secrets
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import create_engine, delete
from sqlalchemy.orm import Session
from sqlmodel import SQLModel

from cloud_api.sms.config import SmsSettings
from cloud_api.sms.models import SmsMessage
from cloud_api.sms.providers import TwilioProvider

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "test-auth-token-0123456789"
FROM_NUMBER = "+15005550006"
MASTER = b"sms-test-master-secret"


def twilio_settings(fake_twilio, **extra) -> SmsSettings:
    """SMS settings that make create_app build the Twilio provider, against the fake."""
    return SmsSettings(
        provider="twilio",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_from=FROM_NUMBER,
        twilio_api_base=fake_twilio.base,
        twilio_timeout_seconds=5,
        **extra,
    )


def _create_tables(engine) -> None:
    SQLModel.metadata.create_all(engine, tables=[SmsMessage.__table__])


@pytest.fixture(scope="session")
def pg_url():
    name = f"xinbao_sms_test_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    engine = create_engine(url)
    _create_tables(engine)
    engine.dispose()
    yield url
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sms.db'}"
        engine = create_engine(url)
        _create_tables(engine)
        engine.dispose()
        return url
    return request.getfixturevalue("pg_url")


@pytest.fixture
def engine(db_url):
    engine = create_engine(db_url)
    with Session(engine) as session, session.begin():
        session.execute(delete(SmsMessage))
    yield engine
    engine.dispose()


class Clock:
    """A clock the test moves by hand, so back-off needs no sleeping."""

    def __init__(self) -> None:
        # A second ahead of the wall clock, so rows enqueued during the test (stamped with the
        # real time) are already due.
        self.now = datetime.now(UTC) + timedelta(seconds=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def twilio_provider(fake_twilio):
    provider = TwilioProvider(
        ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, api_base=fake_twilio.base, timeout=5
    )
    yield provider
    provider.close()
