"""Keyed audit chain: where the keyed links start; SQLite refuses INSERT OR REPLACE of entries

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 00:00:00

From this revision the audit chain's links are HMAC-SHA256 under a key the database does not
hold (services/audit.py). Entries already written keep their plain SHA-256 links:
``audit_head.keyed_from`` is the first seq linked with the key (1 on a new database).

SQLite's ``INSERT OR REPLACE`` deletes the conflicting row without firing the DELETE trigger
(unless the connection turned ``recursive_triggers`` on, which a writer chooses), so an entry
could be replaced in place. A BEFORE INSERT trigger fires before the conflict is resolved and
refuses any insert whose seq is taken, whatever the connection's pragmas. (On PostgreSQL an
``INSERT ... ON CONFLICT DO UPDATE`` fires the UPDATE trigger already.)
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NO_REPLACE = "audit_entry_no_replace"


def upgrade() -> None:
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("keyed_from", sa.Integer(), nullable=False, server_default="1")
        )
    op.execute("UPDATE audit_head SET keyed_from = last_seq + 1")
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            f"CREATE TRIGGER {_NO_REPLACE} BEFORE INSERT ON audit_entry "
            "WHEN EXISTS (SELECT 1 FROM audit_entry WHERE seq = NEW.seq) "
            "BEGIN SELECT RAISE(ABORT, 'audit_entry is append-only: REPLACE refused'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {_NO_REPLACE}")
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.drop_column("keyed_from")
