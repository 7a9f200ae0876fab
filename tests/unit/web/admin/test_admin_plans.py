"""Every filter of the admin deliveries page reads an index, on SQLite and on PostgreSQL.

The plans of the statements the page runs are read over 20,000 analysed deliveries, as
``tests/unit/web/api/test_api_plans.py`` does for the API: no full scan of webhook_events,
and each filter's own index.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from receiver.observe.metrics import _UNMATCHED
from receiver.store.models import WebhookEvent, utcnow
from receiver.web.admin.queries import Cursor, DeliveryFilter, deliveries_statement
from tests.unit.web.api.test_api_plans import plan

ROWS = 20_000
START = utcnow() - timedelta(days=30)
_events = WebhookEvent.__table__  # type: ignore[attr-defined]
#: One delivery in 100 came from the event list, one in 100 was rejected: rare enough that
#: reading the newest deliveries and skipping the rest is no plan for them.
_COLUMNS = (
    "dedupe_key, received_at, source, delivery_id, job_id, submission_id, body, headers, outcome"
)
_POSTGRESQL = (
    f"INSERT INTO webhook_events ({_COLUMNS})"
    " SELECT 'key_' || n, :start + n * interval '1 second',"
    " CASE WHEN n % 100 = 0 THEN 'events' WHEN n % 2 = 0 THEN 'url' ELSE 'endpoint' END,"
    " 'msg_' || n, 'job_' || n, 'sub_' || (n / 4), '{}', '{}',"
    " CASE WHEN n % 100 = 1 THEN 'rejected' ELSE 'applied' END"
    " FROM generate_series(1, :rows) AS n"
)
_SQLITE = (
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < :rows)"
    f" INSERT INTO webhook_events ({_COLUMNS})"
    " SELECT 'key_' || x, strftime('%Y-%m-%d %H:%M:%f', :start, '+' || x || ' seconds'),"
    " CASE WHEN x % 100 = 0 THEN 'events' WHEN x % 2 = 0 THEN 'url' ELSE 'endpoint' END,"
    " 'msg_' || x, 'job_' || x, 'sub_' || (x / 4), '{}', '{}',"
    " CASE WHEN x % 100 = 1 THEN 'rejected' ELSE 'applied' END"
    " FROM n"
)


@pytest.fixture
def filled(engine: Engine) -> Engine:
    """20,000 deliveries, one a second, statistics gathered."""
    postgresql = engine.dialect.name == "postgresql"
    start = START if postgresql else START.replace(tzinfo=None).isoformat(sep=" ")
    with engine.begin() as conn:
        conn.execute(
            sa.text(_POSTGRESQL if postgresql else _SQLITE), {"start": start, "rows": ROWS}
        )
        conn.exec_driver_sql("ANALYZE webhook_events" if postgresql else "ANALYZE")
    return engine


def full_scans(lines: list[str], dialect: str) -> list[str]:
    """Return the steps that read all of webhook_events without an index."""
    if dialect == "sqlite":
        return [line for line in lines if re.search(r"^SCAN webhook_events(?!.*USING)", line)]
    return [line for line in lines if line.startswith("Seq Scan")]


_RECEIVED = ({"ix_webhook_events_received_at"},)
_OUTCOME = ({"ix_webhook_events_outcome_received_at"},)
#: The search matches a submission id, a job id or a delivery id: it reads all three.
_SEARCH = (
    {"ix_webhook_events_submission_id"},
    {"ix_webhook_events_job_id"},
    {"ix_webhook_events_delivery_id"},
)
#: Each filter, and the indexes it reads: one of each set.
CASES: dict[str, tuple[dict[str, Any], tuple[set[str], ...]]] = {
    "no filter": ({}, _RECEIVED),
    "outcome": ({"outcome": "rejected"}, _OUTCOME),
    "source": ({"source": "events"}, ({"ix_webhook_events_source_received_at"},)),
    "since": ({"since": START + timedelta(seconds=ROWS - 500)}, _RECEIVED),
    "until": ({"until": START + timedelta(seconds=500)}, _RECEIVED),
    "search": ({"search": "msg_77"}, _SEARCH),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_filter_of_the_deliveries_page_reads_an_index(filled: Engine, case: str) -> None:
    dialect = filled.dialect.name
    filters, indexes = CASES[case]
    for after in (None, Cursor(START + timedelta(seconds=ROWS // 2), ROWS // 2)):
        statement = deliveries_statement(DeliveryFilter(**filters), after=after, limit=51)
        with filled.connect() as conn:
            lines = plan(conn, statement)
        words = {word for line in lines for word in line.split()}
        unread = [sorted(group) for group in indexes if not group & words]
        assert (full_scans(lines, dialect), unread) == ([], []), (after, lines)


def test_the_check_sees_a_full_scan(filled: Engine) -> None:
    unindexed = sa.select(_events).where(_events.c.reason == "x").limit(5)
    with filled.connect() as conn:
        assert full_scans(plan(conn, unindexed), filled.dialect.name) != []


def test_counting_unmatched_deliveries_reads_the_outcome_index(filled: Engine) -> None:
    """The gauge's count of unmatched deliveries reads the (outcome, received_at) index:
    no index on the outcome alone is kept (migration 0013)."""
    with filled.connect() as conn:
        lines = plan(conn, _UNMATCHED)
    words = {word for line in lines for word in line.split()}
    assert full_scans(lines, filled.dialect.name) == [], lines
    assert "ix_webhook_events_outcome_received_at" in words, lines
