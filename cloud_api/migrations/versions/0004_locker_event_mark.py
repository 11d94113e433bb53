"""What the cloud holds of each locker's events (the events_upto mark of a full sync)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 00:00:00

Existing lockers start at 0: the first full sync walks their stored events from seq 1.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("locker_link", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("stored_upto", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column(
                "stored_upto_event", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True
            )
        )
        batch_op.add_column(
            sa.Column("stored_from_id", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("locker_link", schema=None) as batch_op:
        batch_op.drop_column("stored_from_id")
        batch_op.drop_column("stored_upto_event")
        batch_op.drop_column("stored_upto")
