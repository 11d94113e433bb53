"""Fresh databases: PostgreSQL (127.0.0.1:5432, user postgres, trust) and SQLite files.

``PgDatabases`` migrates one template per test run (per xdist worker) and hands out databases
that are, in content, fresh copies of it. Copying a template (``CREATE DATABASE ... TEMPLATE``)
costs about 0.4 s on a quiet machine and several seconds with the suite's workers busy, so a
database a test has finished with (``give_back``) is reset and handed out again instead: its
rows deleted and the template's own rows (what the migrations seeded) and sequence positions
put back, in one transaction of a few milliseconds. A database whose schema no longer matches
the template's (a test migrated it down, say) is dropped rather than reused.
"""

import hashlib
import shutil
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from cloud_api.core.db import migrate

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

# Everything a test could change about a database's shape: tables, columns, types, triggers,
# the migration it is at.
_SHAPE = """
SELECT string_agg(x, ';' ORDER BY x) FROM (
    SELECT table_name || '.' || column_name || ':' || data_type AS x
    FROM information_schema.columns WHERE table_schema = 'public'
    UNION ALL
    SELECT tgrelid::regclass::text || '!' || tgname || ':' || tgenabled::text
    FROM pg_trigger WHERE NOT tgisinternal
    UNION ALL
    SELECT 'alembic=' || version_num FROM alembic_version
) shape
"""


def pg_url(name: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def _admin(statement: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(statement)


class _Template:
    """What a fresh copy of the migrated template holds: its shape, its rows, its sequences."""

    def __init__(self, url: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            self.shape = hashlib.sha256(conn.execute(_SHAPE).fetchone()[0].encode()).hexdigest()
            self.tables = [
                row[0]
                for row in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename <> 'alembic_version' ORDER BY tablename"
                )
            ]
            self.rows: dict[str, tuple[list[str], list[tuple]]] = {}
            for table in self.tables:
                cursor = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
                rows = cursor.fetchall()
                if rows:
                    self.rows[table] = ([c.name for c in cursor.description], rows)
            self.sequences = [
                (
                    name,
                    *conn.execute(
                        sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(name))
                    ).fetchone(),
                )
                for (name,) in conn.execute(
                    "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"
                ).fetchall()
            ]

    def reset(self, url: str, name: str) -> bool:
        """Make database ``name`` hold what the template holds; False when its shape differs
        (it must not be reused)."""
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            # Whatever the last test left connected (a pool not yet disposed) goes first.
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
        with psycopg.connect(url, autocommit=True) as conn:
            shape = conn.execute(_SHAPE).fetchone()[0] or ""
            if hashlib.sha256(shape.encode()).hexdigest() != self.shape:
                return False
            with conn.transaction():
                # As superuser, past the audit trail's append-only triggers and foreign keys
                # (both are triggers), so the order of the deletes does not matter.
                conn.execute("SET LOCAL session_replication_role = replica")
                for table in self.tables:
                    conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
                for table, (columns, rows) in self.rows.items():
                    insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                        sql.Identifier(table),
                        sql.SQL(", ").join(map(sql.Identifier, columns)),
                        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
                    )
                    conn.cursor().executemany(insert, rows)
                for sequence, last_value, is_called in self.sequences:
                    conn.execute("SELECT setval(%s, %s, %s)", (sequence, last_value, is_called))
        return True


class PgDatabases:
    """``fresh()`` a migrated, empty database's URL; ``give_back(url)`` when the test is over
    (it may then be reset and handed out again); ``close()`` drops them all."""

    def __init__(self, prefix: str = "xinbao_e2e") -> None:
        self.prefix = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self._template_name: str | None = None
        self._template: _Template | None = None
        self._made: list[str] = []
        self._free: list[str] = []

    def fresh(self) -> str:
        """URL of a database holding exactly what the migrated template holds."""
        if self._template is None:
            self._template_name = f"{self.prefix}_tpl"
            _admin(f"CREATE DATABASE {self._template_name}")
            self._made.append(self._template_name)
            migrate(pg_url(self._template_name))
            self._template = _Template(pg_url(self._template_name))
        while self._free:
            name = self._free.pop()
            if self._template.reset(pg_url(name), name):
                return pg_url(name)
            self._drop(name)
        name = f"{self.prefix}_{uuid.uuid4().hex[:8]}"
        _admin(f"CREATE DATABASE {name} TEMPLATE {self._template_name}")
        self._made.append(name)
        return pg_url(name)

    def give_back(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        if name in self._made and name != self._template_name and name not in self._free:
            self._free.append(name)

    def _drop(self, name: str) -> None:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self._made.remove(name)

    def close(self) -> None:
        for name in reversed(self._made):
            _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self._made.clear()
        self._free.clear()
        self._template = None


class SqliteDatabases:
    """The same for SQLite: one migrated template file, copied per database."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self._template: Path | None = None

    def fresh(self) -> str:
        if self._template is None:
            self._template = self.dir / "template.db"
            migrate(f"sqlite:///{self._template}")
        path = self.dir / f"xinbao-{uuid.uuid4().hex[:8]}.db"
        shutil.copy(self._template, path)
        return f"sqlite:///{path}"
