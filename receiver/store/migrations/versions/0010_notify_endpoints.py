"""Notification endpoints as records, and every delivery attempt kept.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "notify_endpoints",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("secret", sa.String(200), nullable=False),
        sa.Column("previous_secret", sa.String(200), nullable=True),
        sa.Column("previous_secret_expires_at", TIMESTAMP, nullable=True),
        sa.Column("event_types", JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("disabled_reason", sa.String(500), nullable=True),
        sa.Column("disabled_at", TIMESTAMP, nullable=True),
        sa.Column("rate", sa.Float(), nullable=True),
        sa.Column("description", sa.String(500), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("failing_since", TIMESTAMP, nullable=True),
        sa.Column("failing_told_at", TIMESTAMP, nullable=True),
        sa.Column("last_success_at", TIMESTAMP, nullable=True),
        sa.Column("last_failure", sa.String(500), nullable=True),
    )
    op.create_table(
        "notification_attempts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("notification_id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.String(40), nullable=True),
        sa.Column("attempted_at", TIMESTAMP, nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("response", sa.Text(), nullable=True),
    )
    op.create_index(
        "ix_notification_attempts_notification_id", "notification_attempts", ["notification_id"]
    )
    op.create_index(
        "ix_notification_attempts_attempted_at", "notification_attempts", ["attempted_at"]
    )
    op.add_column("notifications", sa.Column("endpoint_id", sa.String(40), nullable=True))
    op.create_index(
        "ix_notifications_endpoint_id_status", "notifications", ["endpoint_id", "status"]
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_endpoint_id_status", table_name="notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("endpoint_id")
    op.drop_table("notification_attempts")
    op.drop_table("notify_endpoints")
