"""An endpoint's notifications by status in order: a claim stops at the few it leases.

``(endpoint_id, status)`` gains ``id``. A claim leases an endpoint's oldest due
notifications; with the index in that order it reads them first and stops, instead of
reading and sorting every pending one (a backlog's thousands, at every claim of four).
SQLite's index held the row id already; PostgreSQL's did not.

On PostgreSQL building it takes the table's write lock for as long as the build (a status
change waits to write its notifications meanwhile); behind a long transaction it gives up
after the connection's ``lock_timeout`` (3 s), and the release can be run again.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_notifications_endpoint_id_status_id", "notifications", ["endpoint_id", "status", "id"]
    )
    op.drop_index("ix_notifications_endpoint_id_status", table_name="notifications")


def downgrade() -> None:
    op.create_index(
        "ix_notifications_endpoint_id_status", "notifications", ["endpoint_id", "status"]
    )
    op.drop_index("ix_notifications_endpoint_id_status_id", table_name="notifications")
