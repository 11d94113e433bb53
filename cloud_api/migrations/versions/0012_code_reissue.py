"""Requests for a new opening code (lost code at a kiosk, resend from the dashboard)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 00:00:00

One row per request the rate limits count (docs/codes.md "Lost codes").
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import cloud_api.models.common

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "code_reissue",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", cloud_api.models.common.UtcDateTime(timezone=True), nullable=False),
        sa.Column("via", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("locker_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("record_id", sa.Integer(), nullable=True),
        sa.Column("handover_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("event_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
        sa.ForeignKeyConstraint(["handover_id"], ["handover.id"]),
        sa.ForeignKeyConstraint(["locker_id"], ["locker.id"]),
        sa.ForeignKeyConstraint(["record_id"], ["approval_record.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("code_reissue", schema=None) as batch_op:
        batch_op.create_index("ix_code_reissue_locker_at", ["locker_id", "at"], unique=False)
        batch_op.create_index("ix_code_reissue_record_at", ["record_id", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("code_reissue", schema=None) as batch_op:
        batch_op.drop_index("ix_code_reissue_record_at")
        batch_op.drop_index("ix_code_reissue_locker_at")
    op.drop_table("code_reissue")
