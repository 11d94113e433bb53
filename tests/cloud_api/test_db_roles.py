"""The API on PostgreSQL runs as a role that does not own the tables (docs/deploy.md,
"Database roles"): migrations as the owner, then rows-only rights for the API's role. The
attack: with the API's credentials, disable or drop the audit triggers (or alter, truncate,
rewrite the trail). As the owner, which the API used to be, each of these works."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from sqlmodel import Session

from cloud_api.core.db import RoleError, grant_app_role, make_engine, migrate
from cloud_api.services import audit
from tests.support.postgres import PG_ADMIN

pytestmark = pytest.mark.postgres

ATTACKS = [
    "ALTER TABLE audit_entry DISABLE TRIGGER audit_entry_no_update",
    "ALTER TABLE audit_entry DISABLE TRIGGER ALL",
    "DROP TRIGGER audit_entry_no_update ON audit_entry",
    "ALTER TABLE audit_entry OWNER TO CURRENT_USER",
    "TRUNCATE audit_entry",
    "UPDATE audit_entry SET actor = 'someone-else'",
    "DELETE FROM audit_entry",
    "CREATE TABLE audit_copy (seq int)",
    "UPDATE alembic_version SET version_num = '0001'",
]


@pytest.fixture
def roles():
    tag = uuid.uuid4().hex[:8]
    owner, app, database = f"xb_owner_{tag}", f"xb_app_{tag}", f"xinbao_roles_{tag}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{owner}" LOGIN')
        conn.execute(f'CREATE ROLE "{app}" LOGIN')
        conn.execute(f'CREATE DATABASE "{database}" OWNER "{owner}"')
        # PostgreSQL 15 gives PUBLIC no CREATE on the public schema; the database's owner
        # owns it (pg_database_owner), so the owner may create tables and the app may not.
    urls = {
        name: f"postgresql://{role}@127.0.0.1:5432/{database}"
        for name, role in (("owner", owner), ("app", app))
    }
    yield owner, app, urls
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.execute(f'DROP ROLE IF EXISTS "{app}"')
        conn.execute(f'DROP ROLE IF EXISTS "{owner}"')


def _some_entries(url: str) -> None:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            for n in range(3):
                audit.append(session, "test", "test.entry", f"subject-{n}")
            session.commit()
    finally:
        engine.dispose()


def _attempt(url: str, statement: str) -> Exception | None:
    with psycopg.connect(url) as conn:
        try:
            conn.execute(statement)
        except psycopg.Error as err:
            conn.rollback()
            return err
        conn.rollback()  # the owner's successful attempt must not change the next one
    return None


@pytest.mark.parametrize("statement", ATTACKS)
def test_the_api_role_cannot_disable_triggers_or_alter_the_trail(roles, statement):
    owner, app, urls = roles
    migrate(urls["owner"], app_role=app)
    _some_entries(urls["app"])  # the API's role appends and reads as the service needs
    refused = _attempt(urls["app"], statement)
    assert isinstance(refused, psycopg.errors.InsufficientPrivilege), (statement, refused)
    # The same statement as the owner (what the API was before): the DDL goes through, or
    # only the trigger stops it.
    as_owner = _attempt(urls["owner"], statement)
    assert as_owner is None or "append-only" in str(as_owner), (statement, as_owner)
    engine = make_engine(urls["app"])
    try:
        with Session(engine) as session:
            verdict = audit.verify(session)
    finally:
        engine.dispose()
    assert verdict.ok and verdict.checked == 3


def test_granting_refuses_the_owner_a_superuser_or_a_missing_role(roles):
    owner, app, urls = roles
    migrate(urls["owner"])
    with pytest.raises(RoleError, match="owner"):
        grant_app_role(urls["owner"], owner)
    with pytest.raises(RoleError, match="superuser"):
        grant_app_role(urls["owner"], "postgres")
    with pytest.raises(RoleError, match="does not exist"):
        grant_app_role(urls["owner"], "no_such_role_here")
    with pytest.raises(RoleError, match="PostgreSQL"):
        grant_app_role("sqlite:///x.db", app)


@pytest.mark.slow
def test_xinbao_api_migrate_only_grants_the_api_role(roles):
    import subprocess
    import sys
    from pathlib import Path

    owner, app, urls = roles
    xinbao = Path(sys.executable).parent / "xinbao"
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": urls["app"],
        "XINBAO_OWNER_DATABASE_URL": urls["owner"],
        "XINBAO_DEMO": "1",
    }
    done = subprocess.run(
        [str(xinbao), "api", "--migrate-only"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert isinstance(_attempt(urls["app"], ATTACKS[0]), psycopg.errors.InsufficientPrivilege)
    assert _attempt(urls["app"], "SELECT count(*) FROM audit_entry") is None
    # The owner as the API's role: refused with a clear message, exit 2, no traceback.
    same = subprocess.run(
        [str(xinbao), "api", "--migrate-only"],
        env=env | {"DATABASE_URL": urls["owner"]},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert same.returncode == 2 and "is the tables' owner" in same.stderr, same.stderr
