"""Add the reconciler's bookkeeping to submissions: polls, backoff and leases.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("submitted_at", TIMESTAMP, nullable=True))
        batch.add_column(
            sa.Column("poll_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("next_poll_at", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("last_polled_at", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("poll_error", sa.String(500), nullable=True))
        batch.add_column(sa.Column("lease_owner", sa.String(100), nullable=True))
        batch.add_column(sa.Column("lease_until", TIMESTAMP, nullable=True))
    # Stuck rows are the few not in a final state and unchanged for a while.
    op.create_index("ix_submissions_status_updated_at", "submissions", ["status", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_submissions_status_updated_at", table_name="submissions")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("lease_owner")
        batch.drop_column("poll_error")
        batch.drop_column("last_polled_at")
        batch.drop_column("next_poll_at")
        batch.drop_column("poll_attempts")
        batch.drop_column("submitted_at")
