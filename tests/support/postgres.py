"""Fresh databases: PostgreSQL (127.0.0.1:5432, user postgres, trust) and SQLite files.

``PgDatabases`` migrates one template per test run and copies it for each database asked
for (``CREATE DATABASE ... TEMPLATE``), which is much faster than migrating each time.
"""

import shutil
import uuid
from pathlib import Path

import psycopg

from cloud_api.core.db import migrate

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def pg_url(name: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def _admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


class PgDatabases:
    def __init__(self, prefix: str = "xinbao_e2e") -> None:
        self.prefix = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self._template: str | None = None
        self._made: list[str] = []

    def fresh(self) -> str:
        """URL of a new, migrated, empty database (dropped by ``close()``)."""
        if self._template is None:
            self._template = f"{self.prefix}_tpl"
            _admin(f"CREATE DATABASE {self._template}")
            self._made.append(self._template)
            migrate(pg_url(self._template))
        name = f"{self.prefix}_{uuid.uuid4().hex[:8]}"
        _admin(f"CREATE DATABASE {name} TEMPLATE {self._template}")
        self._made.append(name)
        return pg_url(name)

    def close(self) -> None:
        for name in reversed(self._made):
            _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self._made.clear()
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
