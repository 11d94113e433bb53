"""Engines, sessions and migrations.

SQLite is the single-machine default. Its transactions that may write start with ``BEGIN
IMMEDIATE`` here, in turn (WriterQueue): with the default deferred start, two transactions
that both read and then write (claiming a compartment, appending to the audit chain) fail with
"database is locked" instead of waiting for each other. PostgreSQL keeps its normal
transactions; services use conditional UPDATEs and row locks where it matters.

Requests that only read (GET and HEAD, unless the route says it writes: api/deps.py) use
``reading(engine)``: autocommit on PostgreSQL, no BEGIN and query-only on SQLite.
"""

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.orm import ORMExecuteState
from sqlalchemy.orm import Session as OrmSession
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


# An execution option: the connection serves a request that only reads (core/db.py's
# reading(); api/deps.py picks it for GET and HEAD).
READS_ONLY = "xinbao_reads_only"
# With READS_ONLY: the statements of one transaction all see one moment (snapshot()).
SNAPSHOT = "xinbao_snapshot"
# A pooled PostgreSQL connection idle longer than this is pinged before it is handed out
# (a server restarted or a firewall that dropped it); a busy one is not, which saves a round
# trip on every request. A connection that died while busy fails its request once and the
# pool is emptied (SQLAlchemy's disconnect handling), so the next one reconnects.
IDLE_PING_AFTER = 1.0
# How long a SQLite writer waits for its turn (as long as SQLite's own busy timeout).
WRITE_TURN_TIMEOUT = 30.0


class WriteInReadingRequest(RuntimeError):
    """A reading session (a GET route without @writes_on_read, a snapshot) tried to write: a
    bug, refused before it reaches the database (its write would not be atomic on
    PostgreSQL's autocommit reads)."""


_WRITE_REFUSED = (
    "a reading session tried to write: mark its GET route @writes_on_read (api/deps.py)"
)


def reading_session(bind: Engine | Connection) -> Session:
    """A session that only reads (on ``reading(engine)`` or a snapshot's connection): no
    autoflush, and any write it attempts raises WriteInReadingRequest."""
    session = Session(bind, expire_on_commit=False, autoflush=False)
    session.info[READS_ONLY] = True
    return session


@event.listens_for(OrmSession, "before_flush")
def _refuse_flush_when_reading(session: OrmSession, _context, _instances) -> None:
    if session.info.get(READS_ONLY) and (session.new or session.dirty or session.deleted):
        raise WriteInReadingRequest(_WRITE_REFUSED)


@event.listens_for(OrmSession, "do_orm_execute")
def _refuse_dml_when_reading(state: ORMExecuteState) -> None:
    if state.session.info.get(READS_ONLY) and (
        state.is_insert or state.is_update or state.is_delete
    ):
        raise WriteInReadingRequest(_WRITE_REFUSED)


class WriterQueue:
    """SQLite's writers in this process, served first come first served.

    SQLite lets one transaction write at a time. Left to its busy handler, a waiting writer
    sleeps up to 100 ms between tries and whoever tries at the right instant goes first, so
    under 8 concurrent writers some wait seconds (bench/api_bench.py). Here each writer
    takes a ticket before BEGIN IMMEDIATE and is woken when the one before it ends, so the
    wait is the queue ahead of it and nothing more. Other processes on the same file still
    meet SQLite's busy handler."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._busy = False
        self._waiting: deque[threading.Event] = deque()

    def acquire(self, timeout: float) -> bool:
        with self._mutex:
            if not self._busy and not self._waiting:
                self._busy = True
                return True
            turn = threading.Event()
            self._waiting.append(turn)
        if turn.wait(timeout):
            return True
        with self._mutex:
            if turn.is_set():  # handed over between the timeout and here
                return True
            self._waiting.remove(turn)
            return False

    def release(self) -> None:
        with self._mutex:
            if self._waiting:
                self._waiting.popleft().set()  # the turn passes on; still busy
            else:
                self._busy = False


_HOLDS_TURN = "xinbao_holds_write_turn"
_QUERY_ONLY = "xinbao_query_only"


def _sqlite_engine(url: str) -> Engine:
    private_sqlite_file(url)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    writers = WriterQueue()

    def give_back_turn(info: dict) -> None:
        if info.pop(_HOLDS_TURN, False):
            writers.release()

    @event.listens_for(engine, "connect")
    def _sqlite_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not the driver, issue BEGIN (so it can be BEGIN IMMEDIATE).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    def query_only(conn, on: bool) -> None:
        # Straight to the driver (no statement events, no wrapping: cheap enough for every
        # request), and only when it changes.
        if conn.info.get(_QUERY_ONLY, False) != on:
            conn.connection.dbapi_connection.execute(f"PRAGMA query_only={int(on)}")
            conn.info[_QUERY_ONLY] = on

    @event.listens_for(engine, "begin")
    def _sqlite_begin(conn):
        options = conn.get_execution_options()
        if options.get(READS_ONLY):
            # A read: no BEGIN, so each statement reads what is committed as it runs (as
            # PostgreSQL's autocommit reads do), takes no write lock and waits for nobody;
            # query_only makes a write fail instead of slipping through. A snapshot read
            # begins a deferred transaction: WAL keeps its first read's view until it ends.
            query_only(conn, True)
            if options.get(SNAPSHOT):
                conn.exec_driver_sql("BEGIN")
            return
        query_only(conn, False)
        if not writers.acquire(WRITE_TURN_TIMEOUT):
            raise OperationalError(
                "BEGIN IMMEDIATE",
                None,
                Exception(f"database is locked: no turn to write within {WRITE_TURN_TIMEOUT:g} s"),
            )
        conn.info[_HOLDS_TURN] = True
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            give_back_turn(conn.info)
            raise

    # The turn passes on when the transaction ends. commit and rollback fire just before
    # the driver's; the next writer's BEGIN IMMEDIATE then meets SQLite's busy handler for
    # at most that commit's own time. A connection given back or thrown away holding a turn
    # (it should not happen) gives it back too, so the queue can never stall.
    def _sqlite_end(conn):
        give_back_turn(conn.info)

    event.listen(engine, "commit", _sqlite_end)
    event.listen(engine, "rollback", _sqlite_end)

    @event.listens_for(engine.pool, "checkin")
    def _sqlite_checkin(_dbapi_connection, record):
        if record is not None:
            give_back_turn(record.info)

    @event.listens_for(engine.pool, "invalidate")
    def _sqlite_invalidate(_dbapi_connection, record, _exception):
        give_back_turn(record.info)

    return engine


def _ping_when_idle(engine: Engine, after: float) -> None:
    """pool_pre_ping, but only for a connection that sat idle in the pool: a ping is one
    more round trip, and on a busy API most checkouts are of a connection used a moment ago."""

    @event.listens_for(engine.pool, "checkin")
    def _stamp(_dbapi_connection, record):
        if record is not None:
            record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _ping(dbapi_connection, record, _proxy):
        idle_since = record.info.get("idle_since")
        if idle_since is not None and time.monotonic() - idle_since < after:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as err:  # noqa: BLE001 (any driver error means: not usable)
            raise DisconnectionError(f"the pooled connection is gone: {err}") from err
        if not alive:
            raise DisconnectionError("the pooled connection is gone")


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    engine = create_engine(url, pool_size=pool_size, max_overflow=20)
    _ping_when_idle(engine, IDLE_PING_AFTER)
    return engine


def reading(engine: Engine) -> Engine:
    """The same engine and pool for requests that only read: PostgreSQL in autocommit (no
    BEGIN and ROLLBACK round trips; each statement sees committed data, as READ COMMITTED
    does), SQLite likewise with no BEGIN, in query-only mode (no write lock, no queue)."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{READS_ONLY: True})
    return engine.execution_options(isolation_level="AUTOCOMMIT", **{READS_ONLY: True})


@contextmanager
def snapshot(engine: Engine) -> Iterator[Session]:
    """A session, on a connection of its own from ``engine``'s pool, whose statements all see
    one moment (the audit chain's head and its entries while appends go on): REPEATABLE READ
    on PostgreSQL, a deferred read transaction on SQLite. It blocks no writer and refuses to
    write. (Set on the connection: an engine already in autocommit, reading(), would keep
    its autocommit under an engine-level isolation option.)"""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.execution_options(**{READS_ONLY: True, SNAPSHOT: True})
        else:
            conn.execution_options(isolation_level="REPEATABLE READ", **{READS_ONLY: True})
        with reading_session(conn) as session:
            yield session


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
                    "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = :r"
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
