"""An index on the audit trail's subject (a record's page lists its own entries)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 00:00:00

The dashboard's record page shows the audit entries of the record and of its handovers
(``subject`` = ``record:<number>`` or ``handover:<id>``) and refreshes every few seconds;
without an index each refresh would read the whole trail.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_audit_entry_subject", "audit_entry", ["subject"])


def downgrade() -> None:
    op.drop_index("ix_audit_entry_subject", table_name="audit_entry")
