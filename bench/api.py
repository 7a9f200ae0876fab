"""Application API: GET one submission and a filtered page of 100, among 100,000 submissions.

The Procfile's web process as deployed (two sync workers, production settings) serves
a database holding 100,000 submissions (six statuses, 1,000 owners of 100 each, 100
campaigns of 1,000 each). The load generator sends, with a valid key, one of:

- ``get``: ``GET /api/v1/submissions/{id}`` over 5,000 ids;
- ``owner``: ``GET /api/v1/submissions?user_id=…&limit=100`` over 1,000 owners: their page
  of 100, read in order from the (user_id, updated_at) index;
- ``meta``: ``GET /api/v1/submissions?meta.campaign=…&limit=100`` over the 100 campaigns:
  the newest 100 of 1,000 matches, found through the metadata pairs and sorted.

Each request is also sent to the raw-driver reference (``bench/api_reference.py``) under
the same gunicorn, on the same database: what the stack itself allows for the same reads
and the same answers.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.common import ROOT, Database, load_figures, steal_seconds, web_server
from bench.webhook import _cpu_seconds, _loadavg, settled_workers
from devtools.processes import WebProcess
from receiver.flows.api_keys import create_key
from receiver.store.models import utcnow

__all__ = ["ApiRun", "run_api_suite"]

LUA = ROOT / "bench" / "api.lua"
CAMPAIGNS = 100
OWNERS = 1000
REQUESTS = ("get", "owner", "meta")
#: The apps each request is sent to, one after the other: the reference, then the service
#: (``None``).
APPS = {"reference": "bench.api_reference:app", "real": None}
_STATUSES = ("pending", "processing", "succeeded", "failed", "cancelled", "expired")


@dataclass(frozen=True, slots=True)
class ApiRun:
    """One load run of one API request against one database."""

    database: str
    app: str
    request: str
    rows: int
    connections: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_us: int
    load: str = ""
    #: CPU time the hypervisor gave other guests during the row, in ms (``steal_seconds``).
    steal_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def seed(database: Database, rows: int) -> None:
    """Fill the database with ``rows`` submissions in one statement (the triggers add pairs)."""
    start = utcnow() - timedelta(days=30)
    engine = database.engine()
    try:
        with engine.begin() as conn:
            if database.name == "postgresql":
                conn.execute(
                    sa.text(
                        "INSERT INTO submissions (submission_id, user_id, input_url, status,"
                        " meta, created_at, updated_at, poll_attempts, is_test, job_kind, job_id)"
                        " SELECT 'sub_' || n, 'user_' || (n % :owners),"
                        " 'https://uploads.bench.invalid/' || n || '.mp4',"
                        " (ARRAY['pending','processing','succeeded','failed','cancelled',"
                        "'expired'])[n % 6 + 1],"
                        " jsonb_build_object('campaign', 'c' || (n % :campaigns)),"
                        " :start, :start + n * interval '1 second', 0, false, 'video',"
                        " 'job_' || n FROM generate_series(1, :rows) AS n"
                    ),
                    {"start": start, "rows": rows, "owners": OWNERS, "campaigns": CAMPAIGNS},
                )
                conn.execute(sa.text("ANALYZE"))
            else:
                conn.execute(
                    sa.text(
                        "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s"
                        " WHERE n < :rows)"
                        " INSERT INTO submissions (submission_id, user_id, input_url, status,"
                        " meta, created_at, updated_at, poll_attempts, is_test, job_kind, job_id)"
                        " SELECT 'sub_' || n, 'user_' || (n % :owners),"
                        " 'https://uploads.bench.invalid/' || n || '.mp4',"
                        " json_extract(:statuses, '$[' || (n % 6) || ']'),"
                        " json_object('campaign', 'c' || (n % :campaigns)), :start,"
                        " strftime('%Y-%m-%d %H:%M:%f', :start, '+' || n || ' seconds'),"
                        " 0, 0, 'video', 'job_' || n FROM s"
                    ),
                    {
                        "start": start.replace(tzinfo=None).isoformat(sep=" "),
                        "statuses": json.dumps(_STATUSES),
                        "rows": rows,
                        "owners": OWNERS,
                        "campaigns": CAMPAIGNS,
                    },
                )
                conn.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()


def write_paths(path: Path, request: str, rows: int) -> None:
    """Write the paths one run requests, shuffled with a fixed seed."""
    chooser = random.Random(7)
    if request == "get":
        paths = [f"/api/v1/submissions/sub_{chooser.randint(1, rows)}" for _ in range(5000)]
    elif request == "owner":
        paths = [
            f"/api/v1/submissions?user_id=user_{owner}&limit=100"
            for owner in chooser.sample(range(OWNERS), OWNERS)
        ]
    else:
        paths = [
            f"/api/v1/submissions?meta.campaign=c{campaign}&limit=100"
            for campaign in chooser.sample(range(CAMPAIGNS), CAMPAIGNS)
        ]
    path.write_text("\n".join(paths) + "\n", encoding="utf-8")


def load(url: str, paths: Path, key: str, *, connections: int, duration: float) -> dict[str, Any]:
    """Run wrk (or the Python load generator) over ``paths``; return its JSON summary."""
    env = {**os.environ, "API_PATHS": str(paths), "API_KEY": key, "WRK_THREADS": "2"}
    wrk = shutil.which("wrk")
    if wrk is not None:
        command = [
            wrk,
            "-t2",
            f"-c{connections}",
            f"-d{duration:g}s",
            "--timeout",
            "5s",
            "-s",
            str(LUA),
            url,
        ]
    else:
        command = [
            sys.executable,
            "-m",
            "bench.loadgen",
            url,
            "--get-paths",
            str(paths),
            "--header",
            f"Authorization: Bearer {key}",
            "--connections",
            str(connections),
            "--duration",
            str(duration),
        ]
    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    for line in finished.stdout.splitlines():
        if line.startswith('{"bench"'):
            result: dict[str, Any] = json.loads(line)
            return result
    message = f"load generator gave no summary:\n{finished.stderr[-2000:]}"
    raise RuntimeError(message)


def run_api_suite(
    databases: list[Database],
    *,
    rows: int,
    connections: list[int],
    duration: float,
    workdir: Path,
    progress: Any = print,
) -> list[ApiRun]:
    """Seed each database once, then load each request at each connection count on the
    reference and, right after it, on the service: both servers run side by side, so a pair
    of rows shares the machine's state of the moment, not that of minutes apart."""
    runs: list[ApiRun] = []
    for database in databases:
        progress(f"api: seeding {rows} submissions on {database.name}")
        database.reset()
        seed(database, rows)
        engine = database.engine()
        try:
            key = create_key(engine, "bench", now=utcnow())
        finally:
            engine.dispose()
        with ExitStack() as servers:
            started = {}
            for app, module in APPS.items():
                log_path = workdir / f"gunicorn-api-{app}-{database.name}.log"
                started[app] = server = web_server(database, log_path, app=module)
                server.start(timeout=60)
                servers.callback(server.stop)
            for request in REQUESTS:
                paths = workdir / f"api-{request}.txt"
                write_paths(paths, request, rows)
                for conns in connections:
                    for app, server in started.items():
                        progress(f"api: {request} on {database.name} ({app}), {conns} connections")
                        load_run = _LoadRun(database.name, app, request, rows, conns, duration)
                        runs.append(_measure(server, paths, key, load_run))
    return runs


@dataclass(frozen=True, slots=True)
class _LoadRun:
    database: str
    app: str
    request: str
    rows: int
    connections: int
    duration: float


def _measure(server: WebProcess, paths: Path, key: str, run: _LoadRun) -> ApiRun:
    """Load one server with one request's paths; return its figures and CPU per request."""
    workers = settled_workers(server.pid or 0, int(server.env["WEB_CONCURRENCY"]))
    before = _loadavg()
    cpu_before = _cpu_seconds(workers)
    steal_before = steal_seconds()
    summary = load(f"{server.url}/", paths, key, connections=run.connections, duration=run.duration)
    server_cpu = _cpu_seconds(workers) - cpu_before
    steal = steal_seconds() - steal_before
    figures = load_figures(summary)
    return ApiRun(
        database=run.database,
        app=run.app,
        request=run.request,
        rows=run.rows,
        connections=run.connections,
        **figures,
        server_cpu_us=round(server_cpu / max(figures["requests"], 1) * 1e6),
        load=before,
        steal_ms=round(steal * 1000),
    )
