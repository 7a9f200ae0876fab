"""Admin accounts and their failed logins; an index for the admin view's deliveries pages.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "admin_users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("email", sa.String(254), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("session_token", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("last_login_at", TIMESTAMP, nullable=True),
        sa.Column("locked_until", TIMESTAMP, nullable=True),
    )
    op.create_table(
        "admin_login_failures",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("admin_id", sa.Integer(), nullable=False),
        sa.Column("failed_at", TIMESTAMP, nullable=False),
    )
    op.create_index(
        "ix_admin_login_failures_admin_id_failed_at",
        "admin_login_failures",
        ["admin_id", "failed_at"],
    )
    op.create_index(
        "ix_webhook_events_outcome_received_at", "webhook_events", ["outcome", "received_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_events_outcome_received_at", table_name="webhook_events")
    op.drop_table("admin_login_failures")
    op.drop_table("admin_users")
