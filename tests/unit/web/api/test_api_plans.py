"""Every filter of the submission list reads an index, on SQLite and on PostgreSQL.

The query plans are read (``EXPLAIN QUERY PLAN`` / ``EXPLAIN (FORMAT JSON)``) for the
statements the API runs, over 20,000 analysed rows: no full scan of submissions or of the
metadata pairs may appear.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.engine import Engine

from receiver.store.models import Submission, utcnow
from receiver.web.api.listing import submissions_statement

ROWS = 20_000
_submissions = Submission.__table__  # type: ignore[attr-defined]
#: The tables, and ``page``: a filter on metadata reads its page's rows under that name.
_TABLES = ("submissions", "submission_meta", "page")
START = utcnow() - timedelta(days=30)


@pytest.fixture
def filled(engine: Engine) -> Engine:
    """20,000 submissions: six statuses, 500 owners, 50 campaigns; statistics gathered."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO submissions (submission_id, user_id, input_url, status, meta,"
                    " created_at, updated_at, poll_attempts, is_test, job_kind)"
                    " SELECT 'sub_' || n, 'user_' || (n % 500), 'https://x.example/v.mp4',"
                    " (ARRAY['pending','processing','succeeded','failed','cancelled',"
                    "'expired'])[n % 6 + 1], jsonb_build_object('campaign', 'c' || (n % 50)),"
                    " :start, :start + n * interval '1 second', 0, false, 'video'"
                    " FROM generate_series(1, :rows) AS n"
                ),
                {"start": START, "rows": ROWS},
            )
            conn.execute(sa.text("ANALYZE submissions"))
            conn.execute(sa.text("ANALYZE submission_meta"))
        return engine
    # One statement, so the fill takes a moment: the rows are made by SQLite itself.
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < :rows)"
                " INSERT INTO submissions (submission_id, user_id, input_url, status, meta,"
                " created_at, updated_at, poll_attempts, is_test, job_kind)"
                " SELECT 'sub_' || x, 'user_' || (x % 500), 'https://x.example/v.mp4',"
                ' json_extract(\'["pending","processing","succeeded","failed",'
                "\"cancelled\",\"expired\"]', '$[' || (x % 6) || ']'),"
                " json_object('campaign', 'c' || (x % 50)), :start,"
                " strftime('%Y-%m-%d %H:%M:%f', :start, '+' || x || ' seconds'), 0, 0, 'video'"
                " FROM n"
            ),
            {"rows": ROWS, "start": START.replace(tzinfo=None).isoformat(sep=" ")},
        )
        conn.exec_driver_sql("ANALYZE")
    return engine


def plan(conn: Connection, statement: sa.Select[Any]) -> list[str]:
    """Return the plan of ``statement`` as lines naming each step and its table and index."""
    compiled = statement.compile(dialect=conn.dialect)
    params = compiled.construct_params()
    processors = compiled._bind_processors
    values = {
        name: processors[name](value) if name in processors else value
        for name, value in params.items()
    }
    sql = str(compiled)
    if conn.dialect.name == "sqlite":
        positional = tuple(values[name] for name in compiled.positiontup or ())
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", positional).all()
        return [str(row[-1]) for row in rows]
    (document,) = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", values).one()
    if isinstance(document, str):
        document = json.loads(document)
    lines: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        relation = node.get("Relation Name", "")
        index = node.get("Index Name", "")
        lines.append(f"{node['Node Type']} {relation} {index}".strip())
        for child in node.get("Plans", []):
            walk(child)

    walk(document[0]["Plan"])
    return lines


def full_scans(lines: list[str], dialect: str) -> list[str]:
    """Return the steps that read a whole table without an index."""
    if dialect == "sqlite":
        pattern = re.compile(rf"^SCAN ({'|'.join(_TABLES)})(?!.*USING)")
        return [line for line in lines if pattern.search(line)]
    return [line for line in lines if line.startswith("Seq Scan")]


_CHANGED = {"ix_submissions_updated_at"}
_STATUS = {"ix_submissions_status_updated_at", "ix_submissions_status"}
_OWNER = {"ix_submissions_user_id_updated_at"}
#: The metadata pairs' primary key (key, value, submission), as each database names it.
_PAIRS = {"sqlite_autoindex_submission_meta_1", "submission_meta_pkey"}
#: Each filter, and the indexes that may serve it. Six statuses are few: reading the rows
#: in change order and skipping the other statuses is as good as the status index.
CASES: dict[str, tuple[dict[str, Any], set[str]]] = {
    "no filter": ({}, _CHANGED),
    "status": ({"status": "processing"}, _STATUS | _CHANGED),
    "user_id": ({"user_id": "user_7"}, _OWNER),
    "updated_after": ({"updated_after": START + timedelta(seconds=ROWS - 500)}, _CHANGED),
    "meta": ({"meta": {"campaign": "c7"}}, _PAIRS),
    "status and meta": ({"status": "failed", "meta": {"campaign": "c7"}}, _PAIRS | _STATUS),
    "user_id and status": ({"user_id": "user_7", "status": "succeeded"}, _OWNER | _STATUS),
}


def test_every_filter_reads_an_index(filled: Engine) -> None:
    dialect = filled.dialect.name
    wrong = {}
    for case, (filters, indexes) in CASES.items():
        for after in (None, (START + timedelta(seconds=ROWS // 2), ROWS // 2)):
            statement = submissions_statement(dialect=dialect, **filters, after=after, limit=101)
            with filled.connect() as conn:
                lines = plan(conn, statement)
            name = f"{case}, {'next page' if after else 'first page'}"
            used = {word for line in lines for word in line.split() if word in indexes}
            if full_scans(lines, dialect) or not used:
                wrong[name] = lines
    assert wrong == {}

    # The check itself sees a full scan: a filter on a column without an index.
    unindexed = sa.select(_submissions).where(_submissions.c.input_url == "x").limit(5)
    with filled.connect() as conn:
        lines = plan(conn, unindexed)
    assert full_scans(lines, filled.dialect.name) != [], lines
