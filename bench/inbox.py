"""Inbox at scale: the webhook path with millions of stored deliveries beside an empty inbox.

The inbox (``webhook_events``) is filled in one statement per table (``generate_series`` on
PostgreSQL, a recursive CTE on SQLite): N deliveries over the last 30 days, three a
submission, with their submissions. Then the webhook load of the webhook benchmark (the
Procfile's web line, 16 connections) runs against an empty database, the filled one, and
the empty one again; the filled run is compared with the better of the two empty runs.
A few reads that walk the inbox are timed on the filled database afterwards.
"""

# ruff: noqa: S608  (the SQL is built from this module's constants, never from input)

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench.admin import _OUTCOMES, EMAIL, PASSWORD, AdminRun, sign_in, timed_page
from bench.common import Database, outside_transaction, service_env, twin
from bench.webhook import run_one, seed_submissions, write_deliveries
from devtools.processes import WebProcess, free_port
from receiver.flows.admin_accounts import create_admin
from receiver.flows.api_keys import create_key
from receiver.store.models import utcnow

__all__ = ["P99_FACTOR", "RATIO_TARGET", "run_inbox", "seed_inbox"]

#: The targets: the filled inbox's rate and tail against the empty one's.
RATIO_TARGET = 0.90
P99_FACTOR = 1.5

#: Per dialect: the numbers 1..:count as ``s(n)``, a time :step seconds times ``expr``
#: after :oldest, a JSON object, and the n-th of the :outcomes JSON list (100 long).
_SQL = {
    "postgresql": {
        "series": "WITH s(n) AS (SELECT generate_series(1, :count))",
        "at": "CAST(:oldest AS timestamptz) + ({}) * :step * interval '1 second'",
        "object": "jsonb_build_object",
        "outcome": "CAST(:outcomes AS jsonb) ->> (n % 100)",
        "false": "false",
    },
    "sqlite": {
        "series": "WITH RECURSIVE s(n) AS"
        " (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < :count)",
        "at": "strftime('%Y-%m-%d %H:%M:%S', :oldest, '+' || CAST(({}) * :step AS INTEGER)"
        " || ' seconds') || '.000000'",
        "object": "json_object",
        "outcome": "json_extract(:outcomes, '$[' || (n % 100) || ']')",
        "false": "0",
    },
}


def _statements(dialect: str) -> tuple[str, str]:
    """Return the INSERTs of the submissions (n, one per :per deliveries) and deliveries (n)."""
    sql = _SQL[dialect]
    last = sql["at"].format("n * :per")
    submissions = (
        f"{sql['series']} INSERT INTO submissions (submission_id, user_id, input_url, status,"
        " provider_status, meta, created_at, updated_at, poll_attempts, is_test, job_kind,"
        " job_id) SELECT 'sub_' || :tag || '_' || n, 'user_' || (n % 997),"
        " 'https://uploads.bench.invalid/' || n || '.mp4', 'succeeded', 'succeeded',"
        f" {sql['object']}('campaign', 'bench'), {last}, {last}, 0, {sql['false']}, 'video',"
        " 'job_' || :tag || '_' || n FROM s"
    )
    owner = "((n - 1) / :per + 1)"
    body = (
        "'{\"id\":\"job_' || :tag || '_' || " + owner + ' || \'","object":"job",'
        '"kind":"video","status":"succeeded","output":{"url":'
        '"https://cdn.bench.invalid/\' || n || \'.mp4"},"metadata":{"submission_id":'
        "\"sub_' || :tag || '_' || "
        + owner
        + ' || \'","user_id":"user_\' || ('
        + owner
        + " % 997) || '\"}}'"
    )
    deliveries = (
        f"{sql['series']} INSERT INTO webhook_events (dedupe_key, received_at, source,"
        " delivery_id, job_id, submission_id, provider_status, body, headers, outcome)"
        f" SELECT 'wh:msg_' || :tag || '_' || n, {sql['at'].format('n')},"
        " CASE WHEN n % 2 = 0 THEN 'url' ELSE 'endpoint' END, 'msg_' || :tag || '_' || n,"
        f" 'job_' || :tag || '_' || {owner}, 'sub_' || :tag || '_' || {owner}, 'succeeded',"
        f" {body}, {sql['object']}('content-type', 'application/json', 'webhook-id',"
        f" 'msg_' || :tag || '_' || n), {sql['outcome']} FROM s"
    )
    return submissions, deliveries


def _written(conn: sa.Connection, statement: sa.TextClause, values: dict[str, Any]) -> int:
    """Run an INSERT; return the rows it wrote (sqlite3 gives no rowcount after a WITH)."""
    rowcount = conn.execute(statement, values).rowcount
    if rowcount < 0:
        rowcount = int(conn.exec_driver_sql("SELECT changes()").scalar_one())
    return int(rowcount)


def seed_inbox(
    database: Database,
    deliveries: int,
    *,
    per_submission: int = 3,
    oldest: datetime,
    newest: datetime,
    tag: str = "ib",
) -> tuple[int, int]:
    """Store ``deliveries`` deliveries received evenly from ``oldest`` to ``newest``,
    ``per_submission`` in a row for each of their submissions (the last one each
    submission's latest); return (submissions, deliveries) written."""
    count = -(-deliveries // per_submission)
    step = (newest - oldest).total_seconds() / deliveries
    start: Any = oldest if database.name == "postgresql" else f"{oldest:%Y-%m-%d %H:%M:%S}"
    submissions_sql, deliveries_sql = _statements(database.name)
    common = {"tag": tag, "per": per_submission, "step": step, "oldest": start}
    engine = database.engine()
    try:
        with engine.begin() as conn:
            made = _written(conn, sa.text(submissions_sql), {**common, "count": count})
            stored = _written(
                conn,
                sa.text(deliveries_sql),
                {**common, "count": deliveries, "outcomes": json.dumps(_OUTCOMES)},
            )
        if database.name == "postgresql":
            # What autovacuum does after a bulk load on a live database, done now; then the
            # checkpoint a live database made long ago. Without it the checkpoints the
            # load's WAL set off (one every 11-12 s, "occurring too frequently" in the
            # server's log) ran on through the filled run, and its p99 was 18-24 times the
            # empty inbox's in four runs; with it 0.96 and 0.99 times.
            outside_transaction(engine, "VACUUM ANALYZE", "CHECKPOINT")
    finally:
        engine.dispose()
    return made, stored


def _reads(database: Database, submission: str, requests: int, workdir: Path) -> list[AdminRun]:
    """Time the admin's deliveries pages and the API's reads of the inbox, one client each."""
    engine = database.engine()
    try:
        create_admin(engine, EMAIL, PASSWORD, now=utcnow())
        key = create_key(engine, "bench", now=utcnow())
    finally:
        engine.dispose()
    port = free_port()
    env = service_env(database, PORT=str(port), PUBLIC_URL=f"http://127.0.0.1:{port}")
    with (
        WebProcess(env, log_path=workdir / f"inbox-reads-{database.name}.log") as web,
        httpx.Client(base_url=web.url, timeout=30) as admin,
        httpx.Client(
            base_url=web.url, timeout=30, headers={"Authorization": f"Bearer {key}"}
        ) as api,
    ):
        sign_in(admin)
        pages = [
            (admin, "admin: deliveries", "/admin/deliveries"),
            (admin, "admin: deliveries, outcome", "/admin/deliveries?outcome=unmatched"),
            (api, "api: a submission's deliveries", f"/api/v1/submissions/{submission}/events"),
            (api, "api: submissions, page of 100", "/api/v1/submissions?limit=100"),
        ]
        return [timed_page(client, database, *page, requests) for client, *page in pages]


def run_inbox(
    database: Database,
    *,
    rows: int,
    deliveries_per_run: int,
    duration: float,
    requests: int,
    workdir: Path,
    progress: Any = print,
) -> tuple[list[dict[str, Any]], list[AdminRun]]:
    """Fill ``database``'s inbox with ``rows`` deliveries and load it between two runs on an
    empty twin; return the better empty run and the filled one, and the reads' timings."""
    with twin(database) as empty:
        database.reset()
        empty.reset()
        now = utcnow()
        started = time.monotonic()
        made, stored = seed_inbox(database, rows, oldest=now - timedelta(days=30), newest=now)
        seeded = round(time.monotonic() - started, 1)
        progress(f"inbox: {database.name}: {stored} deliveries of {made} submissions in {seeded}s")
        plan = [("e1", empty), ("fl", database), ("e2", empty)]
        loads = {name: seed_submissions(db, f"in{name}", deliveries_per_run) for name, db in plan}
        measured = {}
        for name, db in plan:
            progress(f"inbox: {database.name}, {'filled' if name == 'fl' else 'empty'} inbox")
            # Signed just before the run, so every delivery is inside the timestamp tolerance.
            path = workdir / f"inbox-{name}.tsv"
            write_deliveries(path, db, f"in{name}", loads[name])
            measured[name] = run_one(
                db,
                app="real",
                worker="gthread",
                connections=16,
                duration=duration,
                deliveries=path,
                tag=f"in{name}",
                workdir=workdir,
            )
    best = max(measured["e1"], measured["e2"], key=lambda run: run.rps)
    runs = [
        {**best.as_dict(), "inbox": "empty", "rows": 0, "seed_s": 0.0},
        {**measured["fl"].as_dict(), "inbox": "filled", "rows": stored, "seed_s": seeded},
    ]
    reads = _reads(database, "sub_ib_1", requests, workdir)
    return runs, reads
