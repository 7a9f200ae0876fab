"""Admin pages: the time to answer each page with 100,000 submissions and 500,000 deliveries.

The database is filled as a month of a busy service would leave it (the inbox pruned at
30 days, as the README advises): 100,000 submissions changed over 30 days, 500,000
deliveries over the same 30 days (about 16,700 in the last day), 50,000 polls, 100,000
notifications and 1,000 reconcile passes. The Procfile's web process then serves it, and
each page is asked for sequentially by one signed-in client (after a warm-up), timing the
whole HTTP round trip.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench.common import Database, outside_transaction, service_env
from devtools.processes import WebProcess, free_port
from receiver.flows.admin_accounts import create_admin
from receiver.store.models import (
    Notification,
    Poll,
    ReconcilePass,
    Submission,
    WebhookEvent,
    utcnow,
)

__all__ = ["PAGES", "AdminRun", "fill", "run_admin_suite", "sign_in", "time_page", "timed_page"]

EMAIL = "bench@example.com"
PASSWORD = "bench-admin-password"
DAYS = 30
_BATCH = 10_000
_STATUSES = (
    ["succeeded"] * 85
    + ["failed"] * 5
    + ["processing"] * 6
    + ["pending"] * 2
    + ["cancelled", "expired"]
)
_OUTCOMES = (
    ["applied"] * 70 + ["duplicate"] * 15 + ["stale"] * 10 + ["unmatched"] * 3 + ["rejected"] * 2
)
_NOTIFICATION_STATUSES = ["delivered"] * 95 + ["pending"] * 3 + ["dead"] * 2

#: (name, path): what is timed. ``{…}`` parts are filled from the data before the run.
PAGES = (
    ("overview", "/admin/"),
    ("submissions", "/admin/submissions"),
    ("submissions, page 2", "{submissions_page_2}"),
    ("submissions, status", "/admin/submissions?status=processing"),
    ("submissions, user", "/admin/submissions?user=user_42"),
    ("submissions, metadata", "/admin/submissions?meta=campaign%3Dc7"),
    ("submissions, id", "/admin/submissions?q={some_submission}"),
    ("submission", "/admin/submissions/{some_submission}"),
    ("deliveries", "/admin/deliveries"),
    ("deliveries, page 2", "{deliveries_page_2}"),
    ("deliveries, outcome", "/admin/deliveries?outcome=unmatched"),
    ("deliveries, source", "/admin/deliveries?source=url"),
    ("deliveries, last hour", "/admin/deliveries?since=1h"),
    ("deliveries, a week ago", "/admin/deliveries?until=7d&outcome=rejected"),
    ("delivery", "/admin/deliveries/{some_delivery}"),
    ("notifications, dead", "/admin/notifications?status=dead"),
)


@dataclass(frozen=True, slots=True)
class AdminRun:
    """The timings of one page on one database."""

    database: str
    page: str
    path: str
    requests: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    rows: int

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def _insert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), _BATCH):
        conn.execute(sa.insert(table), rows[start : start + _BATCH])


def fill(database: Database, *, submissions: int, deliveries: int) -> dict[str, int]:
    """Fill an empty, migrated database; return how many rows of each kind it holds."""
    now = utcnow()
    span = timedelta(days=DAYS).total_seconds()
    engine = database.engine()
    counts: dict[str, int] = {}
    try:
        tables = {
            "submissions": Submission.__table__,  # type: ignore[attr-defined]
            "deliveries": WebhookEvent.__table__,  # type: ignore[attr-defined]
            "polls": Poll.__table__,  # type: ignore[attr-defined]
            "notifications": Notification.__table__,  # type: ignore[attr-defined]
            "passes": ReconcilePass.__table__,  # type: ignore[attr-defined]
        }
        with engine.begin() as conn:
            rows = []
            for n in range(submissions):
                at = now - timedelta(seconds=span * (submissions - n) / submissions)
                status = _STATUSES[n % len(_STATUSES)]
                rows.append(
                    {
                        "submission_id": f"sub_{n:07}",
                        "user_id": f"user_{n % 5000}",
                        "input_url": f"https://uploads.example.com/{n}.mp4",
                        "job_id": None if status == "pending" else f"job_{n:07}",
                        "status": status,
                        "provider_status": status,
                        "output_url": (
                            f"https://cdn.example.com/job_{n:07}.mp4"
                            if status == "succeeded"
                            else None
                        ),
                        "meta": {"campaign": f"c{n % 20}", "source": "bench"},
                        "created_at": at - timedelta(minutes=3),
                        "updated_at": at,
                        "is_test": False,
                    }
                )
            _insert(conn, tables["submissions"], rows)
            counts["submissions"] = len(rows)
        with engine.begin() as conn:
            rows = []
            for n in range(deliveries):
                owner = (n * 7919) % submissions  # spread over the submissions
                at = now - timedelta(seconds=span * (deliveries - n) / deliveries)
                body = {
                    "id": f"job_{owner:07}",
                    "object": "job",
                    "status": "succeeded",
                    "metadata": {"submission_id": f"sub_{owner:07}", "user_id": "u"},
                    "output": {"url": f"https://cdn.example.com/job_{owner:07}.mp4"},
                    "updated_at": at.isoformat(),
                }
                rows.append(
                    {
                        "dedupe_key": f"wh:msg_{n}",
                        "received_at": at,
                        "source": "url" if n % 2 else "endpoint",
                        "delivery_id": f"msg_{n}",
                        "job_id": f"job_{owner:07}",
                        "submission_id": f"sub_{owner:07}",
                        "provider_status": "succeeded",
                        "body": json.dumps(body),
                        "headers": {"content-type": "application/json", "webhook-id": f"msg_{n}"},
                        "outcome": _OUTCOMES[n % len(_OUTCOMES)],
                        "reason": None,
                    }
                )
                if len(rows) == _BATCH * 5:
                    _insert(conn, tables["deliveries"], rows)
                    rows = []
            _insert(conn, tables["deliveries"], rows)
            counts["deliveries"] = deliveries
        with engine.begin() as conn:
            polls = [
                {
                    "submission_id": f"sub_{(n * 2) % submissions:07}",
                    "job_id": f"job_{(n * 2) % submissions:07}",
                    "polled_at": now - timedelta(seconds=span * (50_000 - n) / 50_000),
                    "source": "reconcile",
                    "result": "updated",
                    "provider_status": "succeeded",
                    "detail": "processing -> succeeded",
                }
                for n in range(50_000)
            ]
            _insert(conn, tables["polls"], polls)
            notifications = [
                {
                    "message_id": f"msg_n{n}",
                    "submission_id": f"sub_{n % submissions:07}",
                    "endpoint": "https://app.example.com/hooks",
                    "event_type": "submission.succeeded",
                    "payload": "{}",
                    "status": _NOTIFICATION_STATUSES[n % len(_NOTIFICATION_STATUSES)],
                    "attempts": 1,
                    "created_at": now - timedelta(seconds=span * (100_000 - n) / 100_000),
                    "next_attempt_at": now,
                }
                for n in range(100_000)
            ]
            _insert(conn, tables["notifications"], notifications)
            passes = [
                {
                    "started_at": now - timedelta(minutes=n + 1),
                    "finished_at": now - timedelta(minutes=n),
                    "owner": "bench:1:x",
                    "ok": True,
                    "counts": {"checked": 10, "updated": 3},
                }
                for n in range(1000)
            ]
            _insert(conn, tables["passes"], passes)
        counts.update(polls=50_000, notifications=100_000, passes=1000)
        if database.name == "postgresql":
            # What autovacuum does after a bulk load on a live database, done now.
            outside_transaction(engine, "VACUUM ANALYZE")
        create_admin(engine, EMAIL, PASSWORD, now=now)
    finally:
        engine.dispose()
    return counts


def sign_in(client: httpx.Client) -> None:
    page = client.get("/admin/login")
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)
    assert token is not None
    answer = client.post(
        "/admin/login", data={"email": EMAIL, "password": PASSWORD, "csrf_token": token.group(1)}
    )
    if answer.status_code != 302:
        message = f"could not sign in: {answer.status_code}"
        raise RuntimeError(message)


def _next_page(client: httpx.Client, path: str) -> str:
    match = re.search(r'<a href="([^"]+)" rel="next"', client.get(path).text)
    if match is None:
        message = f"{path} has no next page"
        raise RuntimeError(message)
    return match.group(1).replace("&amp;", "&")


def time_page(client: httpx.Client, path: str, requests: int) -> tuple[list[float], int]:
    for _ in range(5):  # warm-up: caches, the pool, Jinja's compiled templates
        client.get(path)
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.get(path)
        timings.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            message = f"{path} answered {answer.status_code}"
            raise RuntimeError(message)
    # Table rows on the page, less the header row (0 for a page without a table).
    rows = max(len(re.findall(r"<tr[ >]", answer.text)) - 1, 0)
    return timings, rows


def timed_page(
    client: httpx.Client, database: Database, name: str, path: str, requests: int
) -> AdminRun:
    """Ask for one page ``requests`` times after a warm-up; return its timings."""
    timings, rows = time_page(client, path, requests)
    ordered = sorted(timings)
    return AdminRun(
        database=database.name,
        page=name,
        path=path,
        requests=requests,
        p50_ms=round(statistics.median(ordered), 1),
        p95_ms=round(ordered[int(len(ordered) * 0.95) - 1], 1),
        max_ms=round(ordered[-1], 1),
        rows=rows,
    )


def run_admin_suite(
    databases: list[Database],
    *,
    submissions: int,
    deliveries: int,
    requests: int,
    workdir: Path,
    progress: Any = print,
) -> list[AdminRun]:
    """Fill each database, serve it with the Procfile's web process, time every page."""
    runs: list[AdminRun] = []
    for database in databases:
        progress(
            f"admin: {database.name}, filling {submissions} submissions, {deliveries} deliveries"
        )
        started = time.monotonic()
        database.reset()
        fill(database, submissions=submissions, deliveries=deliveries)
        progress(f"admin: filled in {time.monotonic() - started:.0f}s")
        port = free_port()
        env = service_env(database, PORT=str(port), PUBLIC_URL=f"http://127.0.0.1:{port}")
        with (
            WebProcess(env, log_path=workdir / f"admin-{database.name}.log") as web,
            httpx.Client(base_url=web.url, timeout=30) as client,
        ):
            sign_in(client)
            fills = {
                "submissions_page_2": _next_page(client, "/admin/submissions"),
                "deliveries_page_2": _next_page(client, "/admin/deliveries"),
                # One with deliveries, polls and notifications in its timeline.
                "some_submission": f"sub_{(submissions // 2) & ~1:07}",
                "some_delivery": str(deliveries // 2),
            }
            for name, template in PAGES:
                path = template.format(**fills)
                runs.append(timed_page(client, database, name, path, requests))
                progress(f"admin: {database.name} {name}: p95 {runs[-1].p95_ms} ms")
    return runs
