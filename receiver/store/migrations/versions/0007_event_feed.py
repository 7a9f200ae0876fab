"""The reconciler's place in ittybit's event list: a cursor and a lease per API URL.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "event_feeds",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("api_url", sa.String(500), nullable=False, unique=True),
        sa.Column("cursor", sa.String(200), nullable=True),
        sa.Column("cursor_at", TIMESTAMP, nullable=True),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("updated_at", TIMESTAMP, nullable=True),
        sa.Column("lease_owner", sa.String(100), nullable=True),
        sa.Column("lease_until", TIMESTAMP, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("event_feeds")
