"""Test submissions, a pending job's kind and options, polls, reconcile passes, the outbox.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("is_test", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(
            sa.Column("job_kind", sa.String(50), nullable=False, server_default="video")
        )
        batch.add_column(sa.Column("job_options", JSON, nullable=True))

    op.create_table(
        "polls",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("submission_id", sa.String(200), nullable=False),
        sa.Column("job_id", sa.String(200), nullable=True),
        sa.Column("polled_at", TIMESTAMP, nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("result", sa.String(20), nullable=False),
        sa.Column("provider_status", sa.String(50), nullable=True),
        sa.Column("detail", sa.String(500), nullable=True),
    )
    op.create_index("ix_polls_submission_id_id", "polls", ["submission_id", "id"])

    op.create_table(
        "reconcile_passes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("counts", JSON, nullable=False),
    )
    op.create_index("ix_reconcile_passes_finished_at", "reconcile_passes", ["finished_at"])

    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("message_id", sa.String(64), nullable=False, unique=True),
        sa.Column("submission_id", sa.String(200), nullable=False),
        sa.Column("endpoint", sa.String(2048), nullable=False),
        sa.Column("event_type", sa.String(50), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("next_attempt_at", TIMESTAMP, nullable=False),
        sa.Column("last_attempt_at", TIMESTAMP, nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("delivered_at", TIMESTAMP, nullable=True),
        sa.Column("lease_owner", sa.String(100), nullable=True),
        sa.Column("lease_until", TIMESTAMP, nullable=True),
    )
    op.create_index(
        "ix_notifications_status_next_attempt_at", "notifications", ["status", "next_attempt_at"]
    )
    op.create_index("ix_notifications_submission_id_id", "notifications", ["submission_id", "id"])


def downgrade() -> None:
    op.drop_table("notifications")
    op.drop_table("reconcile_passes")
    op.drop_table("polls")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("job_options")
        batch.drop_column("job_kind")
        batch.drop_column("is_test")
