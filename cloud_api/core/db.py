"""Engines, sessions and migrations.

SQLite is the single-machine default. Its transactions start with ``BEGIN IMMEDIATE`` here:
with the default deferred start, two transactions that both read and then write (claiming a
compartment, appending to the audit chain) fail with "database is locked" instead of waiting
for each other. PostgreSQL keeps its normal transactions; services use conditional UPDATEs and
row locks where it matters.
"""

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlmodel import Session

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
log = logging.getLogger(__name__)


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy would pick psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


SUPPORTED = ("sqlite", "postgresql", "postgres")


def check_url(url: str) -> str:
    """The URL if this API can use it; ValueError saying what is wrong and what would do."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 (SQLAlchemy raises ArgumentError and others here)
        raise ValueError(
            f"{url[:60]!r} is not a database URL: use sqlite:///path/to/file.db or "
            "postgresql://user@host:5432/name"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED:
        raise ValueError(
            f"the {backend!r} database is not supported: use sqlite:///path/to/file.db or "
            "postgresql://user@host:5432/name"
        )
    return url


def existing_sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names (None for other databases and in-memory SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def describe_error(url: str, err: Exception) -> str:
    """One line for an operator: where the database is and what went wrong (the driver's
    first line), never a traceback nor the password."""
    parsed = make_url(url)
    first = str(getattr(err, "orig", None) or err).strip().splitlines()
    detail = first[0][:200] if first else err.__class__.__name__
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite database {parsed.database}: {detail}"
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    return f"PostgreSQL at {where} (database {parsed.database}): {detail}"


def private_sqlite_file(url: str) -> None:
    """A SQLite database file is created 0600 (its -wal and -shm files take that mode), and a
    directory made for it 0700; an existing file readable by others is narrowed to 0600. (An
    existing directory is left alone: it may be shared, like the working directory.)"""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return
    name = parsed.database
    if not name or name == ":memory:" or name.startswith("file:"):
        return
    path = Path(name)
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    elif path.parent.stat().st_mode & 0o077:
        log.warning(
            "the directory of %s is open to other users: give the database a directory of its "
            "own with mode 0700 (the file itself is kept 0600)",
            path,
        )
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for each in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if each.exists() and each.stat().st_mode & 0o077:
            os.chmod(each, 0o600)


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        private_sqlite_file(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection, _record):
            # Let SQLAlchemy, not the driver, issue BEGIN (so it can be BEGIN IMMEDIATE).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=20, pool_pre_ping=True)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


def migrate(url: str, revision: str = "head", *, app_role: str | None = None) -> None:
    """Bring the database at ``url`` to ``revision`` (the only way tables are created).

    ``app_role`` (PostgreSQL): ``url`` is the tables' owner, and this role, which the API
    runs as, gets only the rights the service uses (grant_app_role)."""
    private_sqlite_file(normalise_url(url))
    command.upgrade(alembic_config(url), revision)
    if app_role is not None:
        grant_app_role(url, app_role)


# The API's restricted PostgreSQL role: rows in, rows out, no DDL. Not owning the tables, it
# cannot drop or disable the audit triggers, nor ALTER or TRUNCATE anything; on the audit
# trail it may only read and append, so even an UPDATE fails before the trigger is asked.
_GRANTS = (
    "GRANT USAGE ON SCHEMA public TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
    "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role}",
    "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON alembic_version FROM {role}",
    "REVOKE UPDATE, DELETE, TRUNCATE ON audit_entry FROM {role}",
    "REVOKE CREATE ON SCHEMA public FROM {role}",
)


class RoleError(ValueError):
    pass


def grant_app_role(owner_url: str, app_role: str) -> None:
    """Give the API's role (not the owner) the rights it needs and no more; after every
    migration, since new tables start with none."""
    from sqlalchemy import text

    url = make_url(normalise_url(owner_url))
    if not url.drivername.startswith("postgresql"):
        raise RoleError("a separate API role is a PostgreSQL setting (SQLite has no roles)")
    if app_role == url.username:
        raise RoleError(
            f"the API role {app_role!r} is the tables' owner: it could disable the audit "
            "triggers. Run migrations as the owner and the API as another role"
        )
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            role = conn.dialect.identifier_preparer.quote(app_role)
            owner = conn.execute(
                text("SELECT rolsuper FROM pg_roles WHERE rolname = :r"), {"r": app_role}
            ).scalar_one_or_none()
            if owner is None:
                raise RoleError(f"PostgreSQL role {app_role!r} does not exist")
            if owner:
                raise RoleError(f"PostgreSQL role {app_role!r} is a superuser")
            owned = conn.execute(
                text(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' "
                    "AND tableowner = :r"
                ),
                {"r": app_role},
            ).scalar_one()
            if owned:
                raise RoleError(
                    f"PostgreSQL role {app_role!r} owns {owned} tables: it could disable the "
                    "audit triggers (ALTER TABLE ... OWNER TO the migrating role first)"
                )
            for statement in _GRANTS:
                conn.execute(text(statement.format(role=role)))
    finally:
        engine.dispose()


def session_scope(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session
