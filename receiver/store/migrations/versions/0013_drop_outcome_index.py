"""Drop the inbox's index on ``outcome`` alone: ``(outcome, received_at)`` serves its reads.

Every query that filters on the outcome (the admin page's filter and overview, the
unmatched deliveries' replay and gauge, a submission's history) can read the leading
column of ``ix_webhook_events_outcome_received_at`` (migration 0006), on PostgreSQL and
SQLite alike; the older index only cost every stored delivery one more index entry to
write and its pages to keep. On PostgreSQL the drop takes the table's lock for a moment;
behind a long transaction it gives up after the connection's ``lock_timeout`` (3 s) instead
of holding webhooks back, and the release can be run again.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_webhook_events_outcome", table_name="webhook_events")


def downgrade() -> None:
    op.create_index("ix_webhook_events_outcome", "webhook_events", ["outcome"])
