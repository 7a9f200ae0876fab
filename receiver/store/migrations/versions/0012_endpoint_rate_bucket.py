"""An endpoint's rate bucket on its row, so every sending process shares one rate.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notify_endpoints") as table:
        table.add_column(sa.Column("rate_tokens", sa.Float(), nullable=True))
        table.add_column(sa.Column("rate_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notify_endpoints") as table:
        table.drop_column("rate_at")
        table.drop_column("rate_tokens")
