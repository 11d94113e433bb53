"""Append-only audit trail in the database, TOTP replay guard, log-in throttle, SMS failures
that count toward giving up, API key rotation and revocation times

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 20:00:00

The audit triggers make the database itself refuse UPDATE, DELETE (and on PostgreSQL
TRUNCATE) of ``audit_entry``: the service never does either, so only a person with direct
database access would, and the hash chain already tells on them; the triggers make them drop
a trigger first, which is a deliberate, visible act (and logged by PostgreSQL's DDL logging).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import cloud_api.models.common

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AUDIT_GUARD_TRIGGERS = ("audit_entry_no_update", "audit_entry_no_delete")
_PG_FUNCTION = "audit_entry_append_only"


def _audit_guard_up() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION {_PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'audit_entry is append-only: % refused', TG_OP
                    USING ERRCODE = 'insufficient_privilege';
            END
            $$
            """
        )
        op.execute(
            f"CREATE TRIGGER audit_entry_no_update BEFORE UPDATE ON audit_entry "
            f"FOR EACH ROW EXECUTE FUNCTION {_PG_FUNCTION}()"
        )
        op.execute(
            f"CREATE TRIGGER audit_entry_no_delete BEFORE DELETE ON audit_entry "
            f"FOR EACH ROW EXECUTE FUNCTION {_PG_FUNCTION}()"
        )
        op.execute(
            f"CREATE TRIGGER audit_entry_no_truncate BEFORE TRUNCATE ON audit_entry "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {_PG_FUNCTION}()"
        )
        return
    for name, verb in zip(AUDIT_GUARD_TRIGGERS, ("UPDATE", "DELETE"), strict=True):
        op.execute(
            f"CREATE TRIGGER {name} BEFORE {verb} ON audit_entry "
            f"BEGIN SELECT RAISE(ABORT, 'audit_entry is append-only: {verb} refused'); END"
        )


def _audit_guard_down() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in (*AUDIT_GUARD_TRIGGERS, "audit_entry_no_truncate"):
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON audit_entry")
        op.execute(f"DROP FUNCTION IF EXISTS {_PG_FUNCTION}()")
        return
    for name in AUDIT_GUARD_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")


def upgrade() -> None:
    op.create_table(
        "login_throttle",
        sa.Column("username", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column(
            "locked_until", cloud_api.models.common.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column("updated_at", cloud_api.models.common.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("username"),
    )
    with op.batch_alter_table("staff", schema=None) as batch_op:
        batch_op.add_column(sa.Column("totp_last_step", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "rotated_at", cloud_api.models.common.UtcDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(
            sa.Column(
                "revoked_at", cloud_api.models.common.UtcDateTime(timezone=True), nullable=True
            )
        )
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("failures", sa.Integer(), server_default="0", nullable=False)
        )
    _audit_guard_up()


def downgrade() -> None:
    _audit_guard_down()
    with op.batch_alter_table("sms_message", schema=None) as batch_op:
        batch_op.drop_column("failures")
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.drop_column("revoked_at")
        batch_op.drop_column("rotated_at")
    with op.batch_alter_table("staff", schema=None) as batch_op:
        batch_op.drop_column("totp_last_step")
    op.drop_table("login_throttle")
