"""Webhooks for integrators: subscribers, the event outbox, codes handed to a personal centre

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 00:00:00

New tables only (docs/integrators.md). A subscriber row holds a salt, not its signing secret
(the secret is derived from the master secret); an event row never holds a code.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import cloud_api.models.common

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_subscriber",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("url", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
        sa.Column("secret_salt", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("include_codes", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("created_at", cloud_api.models.common.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", cloud_api.models.common.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_key.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("webhook_subscriber", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_subscriber_api_key_id"), ["api_key_id"], unique=False
        )

    op.create_table(
        "webhook_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("record_id", sa.Integer(), nullable=False),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("audit_seq", sa.Integer(), nullable=False),
        sa.Column(
            "occurred_at", cloud_api.models.common.UtcDateTime(timezone=True), nullable=False
        ),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "next_attempt_at", cloud_api.models.common.UtcDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "claimed_until", cloud_api.models.common.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column("queued_at", cloud_api.models.common.UtcDateTime(timezone=True), nullable=False),
        sa.Column(
            "delivered_at", cloud_api.models.common.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column("dead_at", cloud_api.models.common.UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("replays", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["approval_record.id"],
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["webhook_subscriber.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    with op.batch_alter_table("webhook_event", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_event_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index(
            "ix_webhook_event_stream", ["subscriber_id", "record_id", "id"], unique=False
        )

    op.create_table(
        "code_fetch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("handover_id", sa.Integer(), nullable=False),
        sa.Column("counter", sa.Integer(), nullable=False),
        sa.Column("fetched_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("fetched_at", cloud_api.models.common.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["handover_id"],
            ["handover.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("handover_id", "counter", name="uq_code_fetch_issue"),
    )


def downgrade() -> None:
    op.drop_table("code_fetch")
    with op.batch_alter_table("webhook_event", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_event_stream")
        batch_op.drop_index("ix_webhook_event_due")

    op.drop_table("webhook_event")
    with op.batch_alter_table("webhook_subscriber", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_subscriber_api_key_id"))

    op.drop_table("webhook_subscriber")
