"""Indexes for the admin deliveries page: its source filter and its delivery-id search.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_webhook_events_source_received_at", "webhook_events", ["source", "received_at"]
    )
    op.create_index("ix_webhook_events_delivery_id", "webhook_events", ["delivery_id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_events_delivery_id", table_name="webhook_events")
    op.drop_index("ix_webhook_events_source_received_at", table_name="webhook_events")
