"""Create submissions and the webhook inbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "submissions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("submission_id", sa.String(200), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("input_url", sa.String(2048), nullable=False),
        sa.Column("job_id", sa.String(200), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("provider_status", sa.String(50), nullable=True),
        sa.Column("output_url", sa.String(2048), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("meta", JSON, nullable=False),
        sa.Column("provider_updated_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
    )
    op.create_index("ix_submissions_submission_id", "submissions", ["submission_id"], unique=True)
    op.create_index("ix_submissions_job_id", "submissions", ["job_id"], unique=True)
    op.create_index("ix_submissions_user_id", "submissions", ["user_id"])
    op.create_index("ix_submissions_status", "submissions", ["status"])
    op.create_index("ix_submissions_updated_at", "submissions", ["updated_at"])

    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("dedupe_key", sa.String(200), nullable=False, unique=True),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("delivery_id", sa.String(200), nullable=True),
        sa.Column("job_id", sa.String(200), nullable=True),
        sa.Column("submission_id", sa.String(200), nullable=True),
        sa.Column("provider_status", sa.String(50), nullable=True),
        sa.Column("body", sa.String(), nullable=False),
        sa.Column("headers", JSON, nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(500), nullable=True),
    )
    op.create_index("ix_webhook_events_received_at", "webhook_events", ["received_at"])
    op.create_index("ix_webhook_events_job_id", "webhook_events", ["job_id"])
    op.create_index("ix_webhook_events_submission_id", "webhook_events", ["submission_id"])
    op.create_index("ix_webhook_events_outcome", "webhook_events", ["outcome"])


def downgrade() -> None:
    op.drop_table("webhook_events")
    op.drop_table("submissions")
