"""Applicants' satisfaction ratings, one per collected pickup (docs/ratings.md)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 00:00:00

The unique handover_id is what keeps one rating per handover, also when two submits race.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import cloud_api.models.common

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rating",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("handover_id", sa.Integer(), nullable=False),
        sa.Column("record_id", sa.Integer(), nullable=False),
        sa.Column("locker_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("scale", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column(
            "submitted_at", cloud_api.models.common.UtcDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(["handover_id"], ["handover.id"]),
        sa.ForeignKeyConstraint(["locker_id"], ["locker.id"]),
        sa.ForeignKeyConstraint(["record_id"], ["approval_record.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("handover_id"),
    )
    with op.batch_alter_table("rating", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rating_submitted_at"), ["submitted_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("rating", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rating_submitted_at"))
    op.drop_table("rating")
