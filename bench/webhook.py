"""Webhook path: the real app vs bare Flask under the Procfile's gunicorn, loaded over loopback.

Each run of the real app gets deliveries of its own: distinct pre-created submissions, each
with one signed delivery that changes it (the most expensive outcome, ``applied``). Half go
to the project-level URL as event envelopes, half to the submission's own signed URL as bare
jobs; all carry Standard Webhooks headers signed just before the run, so the default
timestamp tolerance holds. After the run the inbox must hold every delivery answered 2xx.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.common import ROOT, Database, load_figures, steal_seconds, web_server
from receiver.core.signing import sign_standard_webhook, webhook_token
from receiver.flows.records import import_submissions
from receiver.store.models import WebhookEvent

__all__ = ["WebhookRun", "run_webhook_suite"]

LUA = ROOT / "bench" / "deliveries.lua"
#: The apps measured beside the real one, under the same gunicorn command and settings.
_APPS = {"bare": "bench.bare:app", "reference": "bench.reference:app"}
#: gunicorn options per worker class, added to the Procfile's web line; a command-line option
#: wins over config/gunicorn.py. ``gthread`` is the Procfile's own class, with WEB_THREADS'
#: default of 4: gunicorn's gthread on PostgreSQL, on SQLite its subclass that answers a
#: whole webhook in the loop thread (config/gunicorn_worker.py). ``gthread-plain`` is
#: gunicorn's gthread on both, what the Procfile ran on SQLite before that subclass.
WORKER_CLASSES = {
    "sync": "--worker-class sync --threads 1",
    "gthread": "--threads 4",
    "gthread-plain": "--worker-class gthread --threads 4",
}


@dataclass(frozen=True, slots=True)
class WebhookRun:
    """One load run against one server."""

    database: str
    app: str
    worker: str
    connections: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    ok: int | None = None
    sent: int | None = None
    stored: int | None = None
    lost: int | None = None
    wrapped: int = 0
    #: CPU the gunicorn workers and the load generator spent per request.
    server_cpu_us: int = 0
    load_cpu_us: int = 0
    load: str = ""
    #: CPU time the hypervisor gave other guests during the row, in ms (``steal_seconds``).
    steal_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def seed_submissions(database: Database, tag: str, count: int) -> list[tuple[str, str, str]]:
    """Create ``count`` submissions with a job each; return (submission, user, job) ids."""
    rows = [(f"sub_{tag}_{n}", f"user_{n % 997}", f"job_{tag}_{n}") for n in range(count)]
    lines = (
        json.dumps(
            {
                "submission_id": sub,
                "user_id": user,
                "input_url": f"https://uploads.bench.invalid/{sub}.mp4",
                "job_id": job,
                "status": "processing",
                "metadata": {"campaign": "bench"},
            }
        )
        for sub, user, job in rows
    )
    engine = database.engine()
    try:
        report = import_submissions(engine, lines, batch=2000)
    finally:
        engine.dispose()
    if report.inserted != count:
        message = f"seeded {report.inserted} of {count} submissions"
        raise RuntimeError(message)
    return rows


def write_deliveries(
    path: Path,
    database: Database,
    tag: str,
    rows: list[tuple[str, str, str]],
    *,
    stamp: int | None = None,
) -> None:
    """Write one signed delivery per submission, alternating project-level and per-submission.

    ``stamp`` (Unix seconds, default now) is every delivery's signing and provider time.
    """
    settings = database.settings()
    key = settings.webhook_secrets[0]
    stamp = int(time.time()) if stamp is None else stamp
    with path.open("w", encoding="utf-8") as out:
        for n, (sub, user, job_id) in enumerate(rows):
            job = {
                "id": job_id,
                "object": "job",
                "kind": "video",
                "status": "succeeded",
                "output": {"url": f"https://cdn.bench.invalid/{job_id}.mp4"},
                "metadata": {"submission_id": sub, "user_id": user, "campaign": "bench"},
                "created_at": stamp - 60,
                "updated_at": stamp,
                "finished_at": stamp,
            }
            if n % 2 == 0:
                target = "/webhooks/ittybit"
                payload: dict[str, Any] = {
                    "id": f"evt_{tag}_{n}",
                    "object": "event",
                    "kind": "job.succeeded",
                    "data": job,
                    "created_at": stamp,
                }
            else:
                token = webhook_token(settings.secret_keys, submission_id=sub, user_id=user)
                target = f"/webhooks/ittybit/{token}"
                payload = job
            body = json.dumps(payload, separators=(",", ":")).encode()
            msg_id = f"msg_{tag}_{n}"
            signature = sign_standard_webhook(key, msg_id=msg_id, timestamp=stamp, body=body)
            out.write(f"{target}\t{msg_id}\t{stamp}\t{signature}\t{body.decode()}\n")


def count_stored(database: Database, tag: str) -> int:
    """Return how many inbox rows this run's deliveries left.

    Event envelopes are keyed by their event id, bare jobs by their webhook-id
    (``receiver.store.inbox.dedupe_key``): both halves are counted.
    """
    table = WebhookEvent.__table__  # type: ignore[attr-defined]
    engine = database.engine()
    try:
        with engine.connect() as conn:
            statement = (
                sa.select(sa.func.count())
                .select_from(table)
                .where(
                    table.c.dedupe_key.like(f"wh:msg_{tag}_%")
                    | table.c.dedupe_key.like(f"evt:evt_{tag}_%")
                )
            )
            return int(conn.execute(statement).scalar_one())
    finally:
        engine.dispose()


def load(
    url: str, deliveries: Path, *, connections: int, duration: float, threads: int = 2
) -> dict[str, Any]:
    """Run wrk (or the Python load generator when wrk is absent); return its JSON summary."""
    env = {**os.environ, "DELIVERIES": str(deliveries), "WRK_THREADS": str(threads)}
    wrk = shutil.which("wrk")
    if wrk is not None:
        command = [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration:g}s",
            "--timeout",
            "5s",
            "-s",
            str(LUA),
            url,
        ]
        tool = "wrk"
    else:
        command = [
            sys.executable,
            "-m",
            "bench.loadgen",
            url,
            "--deliveries",
            str(deliveries),
            "--connections",
            str(connections),
            "--duration",
            str(duration),
        ]
        tool = "loadgen"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    finished = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    for line in finished.stdout.splitlines():
        if line.startswith('{"bench"'):
            result: dict[str, Any] = json.loads(line)
            result["tool"] = tool
            result["cpu_seconds"] = (after.ru_utime - before.ru_utime) + (
                after.ru_stime - before.ru_stime
            )
            return result
    message = f"{tool} gave no summary (exit {finished.returncode}):\n{finished.stderr[-2000:]}"
    raise RuntimeError(message)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def settled_workers(pid: int, count: int, *, timeout: float = 60.0) -> list[int]:
    """Return the server's worker pids once ``count`` of them run and every one is idle.

    A gunicorn worker loads the app after it forks, and the server answers ``/readyz`` as
    soon as one worker has. Listed at that moment, a worker not yet forked was left out of
    the CPU count (rows showed half the reference's CPU), and one still loading had its
    start-up charged to the load. Idle: no worker's CPU time moved for 0.3 s.
    """
    deadline = time.monotonic() + timeout
    last: tuple[list[int], float] | None = None
    still = 0
    while time.monotonic() < deadline:
        workers = sorted(_children(pid))
        seen = (workers, _cpu_seconds(workers))
        still = still + 1 if len(workers) == count and seen == last else 0
        if still >= 3:
            return workers
        last = seen
        time.sleep(0.1)
    message = f"the server (pid {pid}) did not settle with {count} idle workers in {timeout:g} s"
    raise RuntimeError(message)


def _cpu_seconds(pids: list[int]) -> float:
    """Return user + system CPU seconds the processes have used so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def _loadavg() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def run_one(
    database: Database,
    *,
    app: str,
    worker: str,
    connections: int,
    duration: float,
    deliveries: Path,
    tag: str | None,
    workdir: Path,
    env: Mapping[str, str] | None = None,
) -> WebhookRun:
    """Start a server (with ``env`` added to the service's environment), load it, stop it,
    and (for the real app) check the inbox."""
    log_path = workdir / f"gunicorn-{database.name}-{app}-{worker}-{connections}.log"
    server = web_server(
        database, log_path, app=_APPS.get(app), extra=WORKER_CLASSES[worker], env=env
    )
    server.start(timeout=60)
    try:
        workers = settled_workers(server.pid or 0, int(server.env["WEB_CONCURRENCY"]))
        before = _loadavg()
        cpu_before = _cpu_seconds(workers)
        steal_before = steal_seconds()
        summary = load(f"{server.url}/", deliveries, connections=connections, duration=duration)
        server_cpu = _cpu_seconds(workers) - cpu_before
        steal = steal_seconds() - steal_before
    finally:
        server.stop()
    figures = load_figures(summary)
    requests = figures["requests"]
    ok = requests - summary["errors"]["status"]
    run = WebhookRun(
        database=database.name,
        app=app,
        worker=worker,
        connections=connections,
        **figures,
        ok=ok,
        sent=summary["sent"],
        wrapped=summary["wrapped"],
        server_cpu_us=round(server_cpu / max(requests, 1) * 1e6),
        load_cpu_us=round(summary["cpu_seconds"] / max(requests, 1) * 1e6),
        load=before,
        steal_ms=round(steal * 1000),
    )
    if tag is None:
        return run
    stored = count_stored(database, tag)
    # Requests still in flight when the load stopped may be stored without an answer,
    # so stored may exceed ok by at most the connection count; fewer than ok is a loss.
    return WebhookRun(**{**run.as_dict(), "stored": stored, "lost": max(0, ok - stored)})


def run_webhook_suite(
    databases: list[Database],
    *,
    workers: list[str],
    connections: list[int],
    duration: float,
    deliveries_per_run: int,
    workdir: Path,
    progress: Any = print,
) -> list[WebhookRun]:
    """Run bare, reference, real, reference again for every database, worker and load.

    Each real run is compared with the better of the reference runs just before and just
    after it, made under the same conditions on a shared machine; the bare run is the
    ceiling no database-writing handler reaches, kept for context.
    """
    runs: list[WebhookRun] = []
    bare_file = workdir / "bare.tsv"
    for database in databases:
        progress(f"webhook: preparing {database.name}")
        database.reset()
        # Worker classes take turns at each load, so a slower moment of a shared machine (or
        # a fuller database) does not fall on one class's runs only.
        plan = [(worker, conns) for conns in connections for worker in workers]
        for worker, conns in plan:
            for app in ("real", "ref1", "ref2"):
                rows = seed_submissions(
                    database, _tag(database, app, worker, conns), deliveries_per_run
                )
                if not bare_file.exists():
                    write_deliveries(bare_file, database, "bare", rows[:5000])
        for worker, conns in plan:
            common: dict[str, Any] = {"worker": worker, "connections": conns, "duration": duration}
            progress(f"webhook: bare flask, {worker}, {conns} connections")
            runs.append(
                run_one(
                    database, app="bare", deliveries=bare_file, tag=None, workdir=workdir, **common
                )
            )
            measured: dict[str, WebhookRun] = {}
            for app in ("ref1", "real", "ref2"):
                tag = _tag(database, app, worker, conns)
                name = "real" if app == "real" else "reference"
                progress(f"webhook: {name} on {database.name}, {worker}, {conns} connections")
                # Signed just before the run, so every delivery is inside the timestamp tolerance.
                path = workdir / f"{tag}.tsv"
                write_deliveries(path, database, tag, _rows(tag, deliveries_per_run))
                measured[app] = run_one(
                    database, app=name, deliveries=path, tag=tag, workdir=workdir, **common
                )
            # The limit is the better of the two reference runs around the real one: a busy
            # moment on a shared machine must not flatter the ratio.
            runs.append(max(measured["ref1"], measured["ref2"], key=lambda run: run.rps))
            runs.append(measured["real"])
    return runs


def _tag(database: Database, app: str, worker: str, connections: int) -> str:
    return f"{database.name[:2]}{app}{worker}{connections}"


def _rows(tag: str, count: int) -> list[tuple[str, str, str]]:
    return [(f"sub_{tag}_{n}", f"user_{n % 997}", f"job_{tag}_{n}") for n in range(count)]
