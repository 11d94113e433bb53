"""Staff sites, token generations and staff pass numbers (issue 11)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 00:00:00

Existing accounts keep their role and cover every site (site NULL). Cabinets stop receiving
TOTP secrets; staff log in there with passes (xinbao.staff_pass), numbered from 0.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("staff", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("site", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True)
        )
        batch_op.add_column(
            sa.Column("token_generation", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("pass_counter", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("pass_floor", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("staff", schema=None) as batch_op:
        batch_op.drop_column("pass_floor")
        batch_op.drop_column("pass_counter")
        batch_op.drop_column("token_generation")
        batch_op.drop_column("site")
