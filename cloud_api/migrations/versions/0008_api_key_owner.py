"""Which credential created each approval record (integrators see only their own)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 00:00:00

Existing records get their creator from the audit trail (the actor of ``record.created``);
a record with no such entry keeps NULL and is then visible to staff and to keys with the
``records:read:all`` scope only.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("approval_record", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True)
        )
    op.execute(
        "UPDATE approval_record SET created_by = ("
        " SELECT a.actor FROM audit_entry a"
        " WHERE a.action = 'record.created'"
        " AND a.subject = 'record:' || approval_record.application_number"
        " ORDER BY a.seq LIMIT 1)"
    )


def downgrade() -> None:
    with op.batch_alter_table("approval_record", schema=None) as batch_op:
        batch_op.drop_column("created_by")
