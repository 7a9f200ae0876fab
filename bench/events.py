"""Catching up from the event list: N final webhooks dropped, one reconcile pass.

For each N the stand-in runs in a process of its own with N jobs held at ``processing``
(``bench.standin_server --hold-finals``) and the database gets N processing submissions
for them. A first pass places the reconciler's cursor at the newest event, as the worker's
passes would have while the jobs ran; then every job finishes and no webhook says so (the
outage). The measured pass runs in a fresh process (:mod:`bench.reconcile_worker`, the
CLI's ``reconcile --older-than 0s --json``) with a page budget that fits N, and the
stand-in's own request counts say what it cost.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench.common import ROOT, Database, each_size, service_env
from bench.reconcile import StandinProcess
from devtools.standin import DEFAULT_API_KEY
from receiver.flows.records import import_submissions
from receiver.store.models import FINAL_STATUSES, Submission

__all__ = ["EventsRun", "run_events_suite"]

#: The targets: at most 10 requests per 500 jobs settled, and every one settled.
REQUESTS_PER_JOB = 0.02


@dataclass(frozen=True, slots=True)
class EventsRun:
    """One reconcile pass over N submissions whose final webhooks were dropped."""

    database: str
    jobs: int
    latency_ms: float
    event_pages_setting: int
    settled: int
    requests: int
    event_requests: int
    poll_requests: int
    requests_per_settled: float
    events_read: int
    events_applied: int
    seconds: float
    events_per_s: float
    statements_per_event: float
    peak_rss_mib: float
    errors: int
    load: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def _seed(database: Database, job_ids: list[str]) -> None:
    """Add one processing submission per job, as ``bench.standin_server`` names them."""
    lines = (
        json.dumps(
            {
                "submission_id": f"sub_rc_{n}",
                "user_id": f"user_{n % 97}",
                "input_url": f"https://uploads.bench.invalid/{n}.mp4",
                "job_id": job_id,
                "status": "processing",
            }
        )
        for n, job_id in enumerate(job_ids)
    )
    engine = database.engine()
    try:
        report = import_submissions(engine, lines, batch=2000)
    finally:
        engine.dispose()
    if report.inserted != len(job_ids):
        message = f"seeded {report.inserted} of {len(job_ids)} submissions"
        raise RuntimeError(message)


def _settled(database: Database) -> int:
    table = Submission.__table__  # type: ignore[attr-defined]
    finals = [status.value for status in FINAL_STATUSES]
    engine = database.engine()
    try:
        with engine.connect() as conn:
            statement = sa.select(sa.func.count()).where(table.c.status.in_(finals))
            return int(conn.execute(statement.select_from(table)).scalar_one())
    finally:
        engine.dispose()


def _pass(env: dict[str, str], log_path: Path, *args: str) -> dict[str, Any]:
    """Run one reconcile pass in a fresh process; return its measured result."""
    with log_path.open("a") as log:
        finished = subprocess.run(
            [sys.executable, "-m", "bench.reconcile_worker", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            check=False,
        )
    lines = [line for line in finished.stdout.splitlines() if line.startswith('{"bench"')]
    if not lines:
        message = f"the reconcile pass gave no result (exit {finished.returncode}); see {log_path}"
        raise RuntimeError(message)
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _wait_finished(url: str, jobs: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        truth = httpx.get(f"{url}/_standin/jobs", timeout=30).json()
        if sum(job["status"] in ("succeeded", "failed") for job in truth.values()) >= jobs:
            return
        time.sleep(0.5)
    message = "the stand-in's jobs did not finish in time"
    raise RuntimeError(message)


def _requests(url: str) -> dict[str, int]:
    counts: dict[str, int] = httpx.get(f"{url}/_standin/requests", timeout=30).json()
    return counts


def run_one(
    database: Database, *, jobs: int, latency: float, workdir: Path, progress: Any = print
) -> EventsRun:
    """Hold N jobs, seed their submissions, place the cursor, drop every final, one pass."""
    database.reset()
    pages = max(20, math.ceil(jobs / 100) + 1)
    log_path = workdir / f"events-{database.name}-{jobs}.log"
    with StandinProcess(jobs, latency, workdir, extra=("--hold-finals",)) as standin:
        _seed(database, standin.job_ids())
        env = service_env(
            database,
            ITTYBIT_API_URL=standin.url,
            ITTYBIT_API_KEY=DEFAULT_API_KEY,
            LOG_LEVEL="warning",
            RECONCILE_EVENT_PAGES=str(pages),
            # The outage has passed when the pass runs: no webhook is still on its way, so
            # the list is read up to now (the default waits WEBHOOK_SILENCE_AFTER, 10 min,
            # for each event's webhook before reading it).
            WEBHOOK_SILENCE_AFTER="0s",
        )
        # The worker's passes while the jobs ran: the cursor at the newest event.
        first = _pass(env, log_path)["summary"]
        if first["event_pages"] != 1 or first["checked"]:
            message = f"the first pass did not just place the cursor: {first}"
            raise RuntimeError(message)
        httpx.post(f"{standin.url}/_standin/finish", timeout=30).raise_for_status()
        _wait_finished(standin.url, jobs)
        before = _requests(standin.url)
        load = " ".join(f"{value:.2f}" for value in __import__("os").getloadavg())
        result = _pass(env, log_path, "--older-than", "0s")
        after = _requests(standin.url)
    made = {key: after.get(key, 0) - before.get(key, 0) for key in after}
    requests = sum(made.values())
    event_requests = sum(count for key, count in made.items() if key.startswith("GET /events"))
    summary = result["summary"]
    settled = _settled(database)
    seconds = summary["seconds"] or result["seconds"]
    read = summary["events_read"]
    progress(
        f"events: {database.name} N={jobs}: {settled} settled with {requests} requests "
        f"in {seconds:.1f}s"
    )
    return EventsRun(
        database=database.name,
        jobs=jobs,
        latency_ms=latency * 1000,
        event_pages_setting=pages,
        settled=settled,
        requests=requests,
        event_requests=event_requests,
        poll_requests=requests - event_requests,
        requests_per_settled=round(requests / settled, 4) if settled else float(requests),
        events_read=read,
        events_applied=summary["events_applied"],
        seconds=round(seconds, 2),
        events_per_s=round(read / seconds, 1) if seconds else 0.0,
        statements_per_event=round(result["statements"] / max(read, 1), 2),
        peak_rss_mib=result["peak_rss_mib"],
        errors=summary["errors"],
        load=load,
    )


def run_events_suite(
    databases: list[Database],
    *,
    sizes: list[int],
    latency: float,
    workdir: Path,
    progress: Any = print,
) -> list[EventsRun]:
    """Run one catch-up pass per database and N."""
    return each_size(
        "events",
        databases,
        sizes,
        lambda database, jobs: run_one(
            database, jobs=jobs, latency=latency, workdir=workdir, progress=progress
        ),
        progress,
    )
