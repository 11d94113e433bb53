"""The shared lockout state machine's state per locker (xinbao/lockout.py)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 00:00:00

Failures now decay by time and a lockout window counts what it refused: the whole state is
kept as JSON text beside the old columns (which stay as a readable mirror). Existing lockers
start from their old columns the first time a code is checked.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("locker", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lockout_state", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("locker", schema=None) as batch_op:
        batch_op.drop_column("lockout_state")
