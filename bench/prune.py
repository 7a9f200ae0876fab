"""Pruning beside traffic: ``jobhooks events prune --older-than 30d`` while webhooks arrive.

The inbox holds M deliveries received 40 to 70 days ago, four a submission (so three in four
are not their submission's latest, and prunable). The Procfile's web line takes webhooks at
a fixed rate (``bench/loadgen.py --rate``: half the rate measured flat out just before, or
``--prune-rate``) while the command runs in a process of its own; every answer's time is
kept, and those sent while the command ran are the figure.

On PostgreSQL the alternative is measured beside it: a copy of the same rows in a table
partitioned by month of ``received_at``, whose old months are detached and dropped, against
the batched deletes the command made on the plain inbox. A probe inserts one row at a time
into the table being pruned during each, and its insert times are the comparison.
"""

# ruff: noqa: S608  (the SQL is built from this module's constants, never from input)

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bench.common import (
    ROOT,
    Database,
    outside_transaction,
    service_env,
    steal_seconds,
    web_server,
)
from bench.inbox import seed_inbox
from bench.webhook import load, seed_submissions, write_deliveries
from devtools.processes import jobhooks_command
from receiver.store.models import utcnow

__all__ = ["MAX_MS", "PruneRun", "run_prune", "window"]

#: The target: no webhook answered slower than this while the prune runs.
MAX_MS = 1000.0
_PER_SUBMISSION = 4
_SCRATCH = "inbox_by_month"
_INDEXES = ("received_at", "submission_id", "job_id", "delivery_id", "outcome")


@dataclass(frozen=True, slots=True)
class PruneRun:
    """One database's prune beside traffic, and on PostgreSQL the partitioned alternative."""

    database: str
    rows: int
    prunable: int
    deleted: int
    prune_s: float
    rate: float
    #: Webhooks sent while the prune ran, their answer times, and errors in the whole run.
    during: int
    p99_ms: float
    max_ms: float
    over_1s: int
    errors: int
    wrapped: int
    #: One-row inserts into the table being pruned: during the batched deletes, and into
    #: the partitioned copy while its old months are detached and dropped (PostgreSQL).
    probe_delete_p99_ms: float | None = None
    probe_delete_max_ms: float | None = None
    dropped: int | None = None
    drop_s: float | None = None
    probe_drop_p99_ms: float | None = None
    probe_drop_max_ms: float | None = None
    #: CPU time the hypervisor gave other guests while the prune ran, in ms (``steal_seconds``).
    steal_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def window(
    timeline: list[tuple[float, float, int]], start: float, end: float
) -> dict[str, float | int]:
    """Return the requests sent from ``start`` to ``end`` (Unix time): how many, their p99
    and max answer time in ms, how many took over MAX_MS, and how many failed."""
    inside = [(took, status) for at, took, status in timeline if start <= at <= end]
    ordered = sorted(took * 1000 for took, _ in inside)
    return {
        "during": len(inside),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1)
        if ordered
        else 0.0,
        "max_ms": round(ordered[-1], 1) if ordered else 0.0,
        "over_1s": sum(took > MAX_MS for took in ordered),
        "errors": sum(not 200 <= status < 300 for _, status in inside),
    }


@contextmanager
def _probe(engine: Engine, table: str) -> Iterator[list[tuple[float, float, int]]]:
    """Insert one row at a time into ``table`` (about 100 a second) while the block runs;
    yield the inserts as a timeline (Unix start, seconds, 200)."""
    samples: list[tuple[float, float, int]] = []
    stop = threading.Event()
    insert = sa.text(
        f"INSERT INTO {table} (dedupe_key, received_at, source, body, headers, outcome)"
        " VALUES (:key, now(), 'url', '{}', '{}', 'applied')"
    )

    def run() -> None:
        n = 0
        while not stop.wait(0.01):
            n += 1
            started, wall = time.perf_counter(), time.time()
            with engine.begin() as conn:
                conn.execute(insert, {"key": f"probe:{table}:{n}"})
            samples.append((wall, time.perf_counter() - started, 200))

    thread = threading.Thread(target=run, name="probe", daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(timeout=30)


def _partitioned_copy(
    engine: Engine, oldest: datetime, now: datetime
) -> list[tuple[str, datetime]]:
    """Copy the inbox into a table partitioned by month of received_at; return each
    partition's name and upper bound."""
    months = []
    month = oldest.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    while month <= now:
        following = (month + timedelta(days=32)).replace(day=1)
        months.append((f"{_SCRATCH}_{month:%Y%m}", month, following))
        month = following
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {_SCRATCH} (LIKE webhook_events INCLUDING DEFAULTS)"
                " PARTITION BY RANGE (received_at)"
            )
        )
        for name, low, high in months:  # DDL takes no parameters; these are our own times
            conn.execute(
                sa.text(
                    f"CREATE TABLE {name} PARTITION OF {_SCRATCH}"
                    f" FOR VALUES FROM ('{low.isoformat()}') TO ('{high.isoformat()}')"
                )
            )
        conn.execute(sa.text(f"INSERT INTO {_SCRATCH} SELECT * FROM webhook_events"))
        # A unique index must hold the partition key: the dedupe key alone can no longer be.
        conn.execute(sa.text(f"ALTER TABLE {_SCRATCH} ADD PRIMARY KEY (id, received_at)"))
        conn.execute(sa.text(f"CREATE UNIQUE INDEX ON {_SCRATCH} (dedupe_key, received_at)"))
        conn.execute(sa.text(f"CREATE INDEX ON {_SCRATCH} (source, received_at)"))
        for column in _INDEXES:
            conn.execute(sa.text(f"CREATE INDEX ON {_SCRATCH} ({column})"))
    # The copy wrote as much WAL as the seeding, whose checkpoint seed_inbox makes: without one
    # here, the checkpoint this copy set off ran across the prune (the server's log,
    # 2026-12-06 23:26), and the slowest webhook beside it was 2.39 s against 142 ms alone.
    outside_transaction(engine, f"VACUUM ANALYZE {_SCRATCH}", "CHECKPOINT")
    return [(name, high) for name, _, high in months]


def _drop_months(engine: Engine, months: list[tuple[str, datetime]], before: datetime) -> int:
    """Detach and drop every partition wholly older than ``before``; return its rows."""
    old = [name for name, high in months if high <= before]
    with engine.connect() as conn:
        rows = sum(
            int(conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one()) for name in old
        )
    for name in old:
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {_SCRATCH} DETACH PARTITION {name}"))
            conn.execute(sa.text(f"DROP TABLE {name}"))
    return rows


def _partitions(
    engine: Engine, months: list[tuple[str, datetime]], before: datetime
) -> dict[str, Any]:
    """Drop the partitioned copy's old months with the probe inserting into it; return the
    rows dropped, the seconds and the probe's p99 and max during them."""
    with _probe(engine, _SCRATCH) as probed:
        time.sleep(1.0)
        start = time.time()
        dropped = _drop_months(engine, months, before)
        end = time.time()
        time.sleep(1.0)
    p99, most = _ms(probed, start, end)
    return {
        "dropped": dropped,
        "drop_s": round(end - start, 3),
        "probe_drop_p99_ms": p99,
        "probe_drop_max_ms": most,
    }


def _prune(database: Database, workdir: Path) -> tuple[int, float, float, float]:
    """Run ``jobhooks events prune --older-than 30d``; return rows deleted, its start and
    end (Unix time) and its seconds."""
    command = jobhooks_command("events", "prune", "--older-than", "30d")
    started = time.time()
    finished = subprocess.run(
        command, cwd=ROOT, env=service_env(database), capture_output=True, text=True, check=False
    )
    ended = time.time()
    (workdir / f"prune-{database.name}.log").write_text(finished.stdout + finished.stderr)
    match = re.search(r"deleted (\d+) event", finished.stdout)
    if finished.returncode != 0 or match is None:
        message = f"the prune failed (exit {finished.returncode}):\n{finished.stderr[-2000:]}"
        raise RuntimeError(message)
    return int(match.group(1)), started, ended, ended - started


def _ms(timeline: list[tuple[float, float, int]], start: float, end: float) -> tuple[float, float]:
    figures = window(timeline, start, end)
    return float(figures["p99_ms"]), float(figures["max_ms"])


def run_prune(
    database: Database,
    *,
    rows: int,
    rate: float | None,
    deliveries_per_run: int,
    duration: float,
    workdir: Path,
    progress: Any = print,
) -> PruneRun:
    """Seed old deliveries, load the web process at a fixed rate, prune meanwhile."""
    database.reset()
    now = utcnow()
    oldest = now - timedelta(days=70)
    made, stored = seed_inbox(
        database,
        rows,
        per_submission=_PER_SUBMISSION,
        oldest=oldest,
        newest=now - timedelta(days=40),
        tag="old",
    )
    progress(f"prune: {database.name}: {stored} old deliveries of {made} submissions")
    engine = database.engine()
    months = _partitioned_copy(engine, oldest, now) if database.name == "postgresql" else []
    loads = {tag: seed_submissions(database, tag, deliveries_per_run) for tag in ("prc", "prl")}
    server = web_server(database, workdir / f"gunicorn-prune-{database.name}.log")
    server.start(timeout=60)
    try:
        if rate is None:
            path = workdir / "prune-calibrate.tsv"
            write_deliveries(path, database, "prc", loads["prc"])
            summary = load(f"{server.url}/", path, connections=16, duration=duration)
            rate = round(summary["requests"] / (summary["duration_us"] / 1e6) / 2, 1)
            progress(f"prune: {database.name}: webhooks at {rate:g}/s, half the rate flat out")
        path = workdir / "prune-load.tsv"
        write_deliveries(path, database, "prl", loads["prl"])
        traffic = _rated_load(f"{server.url}/", path, rate, workdir / "prune-timeline.tsv")
        # The probe needs PostgreSQL's now(); it is for the comparison with partitions.
        probe = _probe(engine, "webhook_events") if months else nullcontext([])
        extra: dict[str, Any] = {}
        with traffic as timeline:
            with probe as probed:
                time.sleep(2.0)  # the load settles before the prune starts
                steal = steal_seconds()
                deleted, start, end, seconds = _prune(database, workdir)
                steal = steal_seconds() - steal
                progress(f"prune: {database.name}: deleted {deleted} in {seconds:.1f}s")
                time.sleep(2.0)
            if months:  # under the same webhook load
                extra = _partitions(engine, months, now - timedelta(days=30))
                extra["probe_delete_p99_ms"], extra["probe_delete_max_ms"] = _ms(probed, start, end)
    finally:
        server.stop()
        engine.dispose()
    figures = window(timeline["lines"], start, end)
    return PruneRun(
        database=database.name,
        rows=stored,
        prunable=stored - made,
        deleted=deleted,
        prune_s=round(seconds, 2),
        rate=rate,
        during=int(figures["during"]),
        p99_ms=float(figures["p99_ms"]),
        max_ms=float(figures["max_ms"]),
        over_1s=int(figures["over_1s"]),
        errors=int(timeline["errors"]),
        wrapped=int(timeline["wrapped"]),
        steal_ms=round(steal * 1000),
        **extra,
    )


@contextmanager
def _rated_load(url: str, deliveries: Path, rate: float, path: Path) -> Iterator[dict[str, Any]]:
    """Send the deliveries at ``rate`` a second (16 connections) while the block runs; after
    it, the dict yielded holds every request (``lines``), ``errors`` and ``wrapped``."""
    command = [
        sys.executable,
        "-m",
        "bench.loadgen",
        url,
        "--deliveries",
        str(deliveries),
        "--connections",
        "16",
        "--duration",
        "3600",
        "--rate",
        str(rate),
        "--timeline",
        str(path),
    ]
    found: dict[str, Any] = {}
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        yield found
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
    summary = next(line for line in out.splitlines() if line.startswith('{"bench"'))
    figures = json.loads(summary)
    found["errors"] = sum(figures["errors"].values())
    found["wrapped"] = figures["wrapped"]
    found["lines"] = [
        (float(at), float(took), int(status))
        for at, took, status in (line.split("\t") for line in path.read_text().splitlines())
    ]
