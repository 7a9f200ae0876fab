"""Scrub signed webhook URLs from stored notification payloads and idempotent answers.

A submission's signed webhook URL is a bearer credential for its deliveries. Submission
objects carried it until issue 19: notifications kept in the outbox and API answers kept
for ``Idempotency-Key`` replays still hold it. This removes the ``webhook_url`` of each
submission object stored there and leaves the rest of each body as it was written.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Marks this migration for the tests, whatever number the merge gives it.
SCRUBS_WEBHOOK_URLS = True
#: (table, its text column): each holds JSON bodies written with submission objects inside.
_COLUMNS = (("notifications", "payload"), ("api_idempotency", "body"))
#: The ways those bodies were written: the outbox's compact dump; Flask's (sorted keys,
#: then a newline). A body is rewritten in the way it was written.
_STYLES: tuple[dict[str, Any], ...] = (
    {"separators": (",", ":")},
    {"separators": (",", ":"), "sort_keys": True},
    {},
    {"sort_keys": True},
)
_BATCH = 500


def _without_url(item: Any) -> bool:
    """Drop a submission object's signed ``webhook_url``; tell whether there was one."""
    url = item.get("webhook_url") if isinstance(item, dict) else None
    if isinstance(url, str) and "/webhooks/ittybit/" in url:
        del item["webhook_url"]
        return True
    return False


def scrub(text: str) -> str | None:
    """Return ``text`` without the webhook URLs of its submission objects, or None if it had none.

    A submission object is the body itself (an API answer), its ``data`` (a notification),
    or an item of its ``data`` list (a page of the API); metadata is left alone.
    """
    try:
        body = json.loads(text)
    except ValueError:
        return None
    style = next((s for s in _STYLES if _dumps(body, s, text) == text), _STYLES[0])
    found = _without_url(body)
    data = body.get("data") if isinstance(body, dict) else None
    found = _without_url(data) or found
    if isinstance(data, list):
        found = any([_without_url(item) for item in data]) or found
    return _dumps(body, style, text) if found else None


def _dumps(body: Any, style: dict[str, Any], original: str) -> str:
    text = json.dumps(body, **style)
    return text + "\n" if original.endswith("\n") else text


def upgrade() -> None:
    conn = op.get_bind()
    for table_name, column_name in _COLUMNS:
        table = sa.table(table_name, sa.column("id", sa.Integer), sa.column(column_name, sa.Text))
        column = table.c[column_name]
        last = 0
        while True:
            rows = conn.execute(
                sa.select(table.c.id, column)
                .where(table.c.id > last, column.like("%webhook_url%"))
                .order_by(table.c.id)
                .limit(_BATCH)
            ).all()
            if not rows:
                break
            for row_id, text in rows:
                cleaned = scrub(text)
                if cleaned is not None:
                    conn.execute(
                        sa.update(table).where(table.c.id == row_id).values({column_name: cleaned})
                    )
            last = rows[-1][0]


def downgrade() -> None:
    """Nothing to restore: the URLs are derived from the secret key, never needed back."""
