"""Notifications: from a final webhook's 200 to the application, with the worker idle.

For each database the Procfile's ``web`` and ``worker`` run as deployed (production
settings, the worker's reconcile pass due only hourly), with ``NOTIFY_URL`` pointing at
the stand-in application (``devtools.notify_app``, verifying with ``standardwebhooks``).

- *Latency*: final webhooks are sent one at a time, each at a random moment of the
  worker's idle poll; the latency of one is from the receiver's 200 to the application
  receiving its notification.
- *Burst*: many final webhooks at once from 8 senders; how long until the application has
  every notification, and the latency of each.
- *Backlog*: the endpoint disabled, many final webhooks sent (their notifications wait),
  then the endpoint enabled: how long until the application has them all. This is an
  application back after a day down, its thousands of notifications sent at once.
- *Idle cost*: the worker's CPU while nothing is due (its poll every 0.5 s), and the
  time of one look for due rows (``peek_due``) on the table the runs filled, beside the
  time of ``SELECT 1`` through the same connection (a round trip and SQLAlchemy's own
  cost: the floor of any look).
"""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench.common import Database, each_database, service_env
from bench.webhook import seed_submissions
from config.settings import Settings
from devtools.notify_app import NotifyApp
from devtools.processes import WebProcess, WorkerProcess, free_port
from receiver.core.signing import sign_standard_webhook, webhook_token
from receiver.flows.endpoints import disable_endpoint, enable_endpoint
from receiver.store.engines import read_only
from receiver.store.models import utcnow
from reconcile.notify_claims import peek_due

__all__ = [
    "NotifyRun",
    "arrival_latencies",
    "percentile",
    "run_notify_suite",
    "send_burst",
    "send_one_by_one",
    "services",
]

#: The target: a notification reaches the application within this of the webhook's 200.
P95_TARGET_MS = 2000.0
#: The endpoint NOTIFY_URL makes (``receiver.flows.endpoints.default_specs``).
_DEFAULT_ENDPOINT = "ep_default"
_PEEKS = 500


@dataclass(frozen=True, slots=True)
class NotifyRun:
    """One database's notification figures."""

    database: str
    webhooks: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    burst: int
    burst_seconds: float
    burst_per_s: float
    burst_p95_ms: float
    backlog: int
    backlog_seconds: float
    backlog_per_s: float
    idle_cpu_pct: float
    peek_us: float
    select_us: float
    delivered: int
    expected: int
    load: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def _delivery(
    settings: Settings, row: tuple[str, str, str], msg_id: str
) -> tuple[str, dict[str, str], bytes]:
    """Return (path, headers, body) of a signed final webhook on the submission's own URL."""
    sub, user, job_id = row
    stamp = int(time.time())
    job = {
        "id": job_id,
        "object": "job",
        "kind": "video",
        "status": "succeeded",
        "output": {"url": f"https://cdn.bench.invalid/{job_id}.mp4"},
        "metadata": {"submission_id": sub, "user_id": user},
        "updated_at": stamp,
    }
    body = json.dumps(job, separators=(",", ":")).encode()
    key = settings.webhook_secrets[0]
    headers = {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign_standard_webhook(key, msg_id=msg_id, timestamp=stamp, body=body),
    }
    token = webhook_token(settings.secret_keys, submission_id=sub, user_id=user)
    return f"/webhooks/ittybit/{token}", headers, body


def _cpu_seconds(pid: int) -> float:
    """Return user + system CPU seconds the process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def arrival_latencies(app: NotifyApp, answered: dict[str, float]) -> list[float]:
    """Return, per submission answered, seconds from its 200 to its notification."""
    arrived = {item.submission_id: item.at for item in app.applied}
    return [arrived[sub] - at for sub, at in answered.items() if sub in arrived]


@contextmanager
def services(
    database: Database, workdir: Path, name: str, **extra: str
) -> Iterator[tuple[WebProcess, WorkerProcess, Settings]]:
    """Run the Procfile's web and worker as deployed, the worker's reconcile pass due only
    hourly (so it only notifies); yield them and the settings they run with."""
    env = service_env(
        database, PORT=str(free_port()), RECONCILE_INTERVAL="1h", LOG_LEVEL="info", **extra
    )
    web = WebProcess(env, log_path=workdir / f"{name}-web-{database.name}.log")
    worker = WorkerProcess(env, log_path=workdir / f"{name}-worker-{database.name}.log")
    try:
        web.start()
        worker.start(ready="reconcile pass")
        yield web, worker, Settings.from_env(env)
    finally:
        worker.stop()
        web.stop()


def send_one_by_one(
    url: str, settings: Settings, rows: list[tuple[str, str, str]], tag: str, apps: list[NotifyApp]
) -> dict[str, float]:
    """Send a final webhook for each row, each after every app has the previous one's
    notification and a random 0.2-0.8 s more (a random moment of the worker's idle poll);
    return, per submission, when its 200 came."""
    chance = random.Random(3)
    answered: dict[str, float] = {}
    with httpx.Client(base_url=url, timeout=10) as client:
        for n, row in enumerate(rows, start=1):
            path, headers, body = _delivery(settings, row, f"msg_{tag}_{n}")
            response = client.post(path, content=body, headers=headers)
            answered[row[0]] = time.time()
            response.raise_for_status()
            if not all(app.wait_applied(n, timeout=30) for app in apps):
                message = f"notification {n} did not arrive within 30 s"
                raise RuntimeError(message)
            time.sleep(chance.uniform(0.2, 0.8))
    return answered


def send_burst(
    url: str, settings: Settings, rows: list[tuple[str, str, str]], tag: str
) -> tuple[dict[str, float], float]:
    """Send a final webhook for each row from 8 senders at once (signed beforehand); return
    when each submission's 200 came, and when the burst started."""
    answered: dict[str, float] = {}
    lock = threading.Lock()
    deliveries = [
        (row[0], *_delivery(settings, row, f"msg_{tag}_b{n}")) for n, row in enumerate(rows)
    ]
    sender = httpx.Client(base_url=url, timeout=10, limits=httpx.Limits(max_connections=8))

    def send(delivery: tuple[str, str, dict[str, str], bytes]) -> None:
        sub, path, headers, body = delivery
        sender.post(path, content=body, headers=headers).raise_for_status()
        with lock:
            answered[sub] = time.time()

    started = time.time()
    with sender, ThreadPoolExecutor(8) as pool:
        list(pool.map(send, deliveries))
    return answered, started


def drain_backlog(
    database: Database,
    url: str,
    settings: Settings,
    rows: list[tuple[str, str, str]],
    app: NotifyApp,
    *,
    before: int,
) -> float:
    """Disable the endpoint, send a final webhook for each row (their notifications wait),
    enable it; return how long from then until the application had every one."""
    engine = database.engine()
    try:
        with engine.begin() as conn:
            disable_endpoint(conn, _DEFAULT_ENDPOINT, reason="bench: backlog", now=utcnow())
        send_burst(url, settings, rows, "ntlog")
        if len(app.applied) != before:
            message = f"sent while its endpoint was disabled: {len(app.applied) - before}"
            raise RuntimeError(message)
        with engine.begin() as conn:
            enable_endpoint(conn, _DEFAULT_ENDPOINT, now=utcnow(), max_age=settings.notify_max_age)
        started = time.time()
    finally:
        engine.dispose()
    if not app.wait_applied(before + len(rows), timeout=900):
        message = f"the backlog did not drain ({len(app.applied) - before} of {len(rows)})"
        raise RuntimeError(message)
    return max(item.at for item in app.applied) - started


def _look_costs(database: Database) -> tuple[float, float]:
    """Return µs per look for due rows, and per ``SELECT 1`` through the same connection."""
    engine = database.engine()
    try:
        with read_only(engine).connect() as conn:
            now = utcnow()
            started_peeks = time.perf_counter()
            for _ in range(_PEEKS):
                peek_due(conn, now=now)
            peek_us = (time.perf_counter() - started_peeks) / _PEEKS * 1e6
            # The floor: the least statement, through the same connection.
            trivial = sa.select(sa.literal(1))
            started_trivial = time.perf_counter()
            for _ in range(_PEEKS):
                conn.execute(trivial).all()
            select_us = (time.perf_counter() - started_trivial) / _PEEKS * 1e6
    finally:
        engine.dispose()
    return peek_us, select_us


def run_one(
    database: Database,
    *,
    webhooks: int,
    burst: int,
    backlog: int,
    workdir: Path,
    progress: Any = print,
) -> NotifyRun:
    """Measure one database: latency one at a time, a burst, a backlog, the idle cost."""
    database.reset()
    rows = seed_submissions(database, "nt", webhooks + burst + backlog)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    with (
        NotifyApp([secret]) as app,
        services(database, workdir, "notify", NOTIFY_URL=app.url, NOTIFY_SECRET=secret) as (
            web,
            worker,
            settings,
        ),
    ):
        pid = worker.pid
        assert pid is not None
        time.sleep(1.0)
        before = _cpu_seconds(pid)
        time.sleep(10.0)
        idle_cpu = (_cpu_seconds(pid) - before) / 10.0

        answered = send_one_by_one(web.url, settings, rows[:webhooks], "nt", [app])
        latencies = arrival_latencies(app, answered)
        progress(
            f"notify: {database.name}: p95 {percentile(latencies, 0.95) * 1000:.0f} ms "
            f"from the 200 to the application"
        )
        burst_answered, started = send_burst(
            web.url, settings, rows[webhooks : webhooks + burst], "nt"
        )
        progress(f"notify: {database.name}: burst sent in {time.time() - started:.1f}s")
        if not app.wait_applied(webhooks + burst, timeout=120):
            message = f"the burst's notifications did not all arrive ({len(app.applied)})"
            raise RuntimeError(message)
        burst_seconds = max(item.at for item in app.applied) - started
        burst_latencies = arrival_latencies(app, burst_answered)
        backlog_seconds = drain_backlog(
            database,
            web.url,
            settings,
            rows[webhooks + burst :],
            app,
            before=webhooks + burst,
        )
        progress(f"notify: {database.name}: a backlog of {backlog} sent in {backlog_seconds:.1f}s")
        code = worker.stop()
        if code != 0:
            message = f"the worker exited {code} on SIGTERM:\n{worker.log_tail()}"
            raise RuntimeError(message)
        peek_us, select_us = _look_costs(database)
    verified = all(item.verified for item in app.received)
    return NotifyRun(
        database=database.name,
        webhooks=webhooks,
        p50_ms=round(statistics.median(latencies) * 1000, 1),
        p95_ms=round(percentile(latencies, 0.95) * 1000, 1),
        max_ms=round(max(latencies) * 1000, 1),
        burst=burst,
        burst_seconds=round(burst_seconds, 2),
        burst_per_s=round(burst / burst_seconds, 1) if burst_seconds else 0.0,
        burst_p95_ms=round(percentile(burst_latencies, 0.95) * 1000, 1),
        backlog=backlog,
        backlog_seconds=round(backlog_seconds, 2),
        backlog_per_s=round(backlog / backlog_seconds, 1) if backlog_seconds else 0.0,
        idle_cpu_pct=round(idle_cpu * 100, 2),
        peek_us=round(peek_us, 1),
        select_us=round(select_us, 1),
        delivered=len(app.applied) if verified else 0,
        expected=webhooks + burst + backlog,
        load=load,
    )


def run_notify_suite(
    databases: list[Database],
    *,
    webhooks: int,
    burst: int,
    backlog: int,
    workdir: Path,
    progress: Any = print,
) -> list[NotifyRun]:
    """Measure every database."""
    return each_database(
        f"notify: {webhooks} webhooks one by one, a burst of {burst}, a backlog of {backlog}",
        databases,
        lambda database: run_one(
            database,
            webhooks=webhooks,
            burst=burst,
            backlog=backlog,
            workdir=workdir,
            progress=progress,
        ),
        progress,
    )
