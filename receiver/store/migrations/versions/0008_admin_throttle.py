"""Admin sign-in: a throttle by address, and lock-outs that hold for one address alone.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("admin_login_failures") as batch:
        batch.add_column(sa.Column("client_ip", sa.String(64), nullable=True))
    op.create_table(
        "admin_login_attempts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("client_ip", sa.String(64), nullable=False),
        sa.Column("attempted_at", TIMESTAMP, nullable=False),
    )
    op.create_index(
        "ix_admin_login_attempts_client_ip_attempted_at",
        "admin_login_attempts",
        ["client_ip", "attempted_at"],
    )
    op.create_index(
        "ix_admin_login_attempts_attempted_at", "admin_login_attempts", ["attempted_at"]
    )


def downgrade() -> None:
    op.drop_table("admin_login_attempts")
    with op.batch_alter_table("admin_login_failures") as batch:
        batch.drop_column("client_ip")
