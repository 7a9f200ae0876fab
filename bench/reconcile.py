"""Reconcile: N stuck submissions against the stand-in answering each request after 50 ms.

For each N the stand-in runs in a process of its own with N jobs (half still running,
half finished), the database gets N submissions stuck an hour ago, and one reconcile
pass runs in a fresh process (:mod:`bench.reconcile_worker`) with the service's default
settings, so peak RSS is the pass's own.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.common import ROOT, Database, each_size, service_env
from config.settings import Settings
from devtools.standin import DEFAULT_API_KEY
from receiver.flows.records import import_submissions
from receiver.store.models import Submission, utcnow

__all__ = ["ReconcileRun", "run_reconcile_suite"]


@dataclass(frozen=True, slots=True)
class ReconcileRun:
    """One reconcile pass over N stuck submissions."""

    database: str
    jobs: int
    concurrency: int
    latency_ms: float
    checked: int
    updated: int
    unchanged: int
    errors: int
    seconds: float
    jobs_per_s: float
    ideal_per_s: float
    ratio: float
    statements_per_job: float
    transactions_per_job: float
    peak_rss_mib: float
    load: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class StandinProcess:
    """``bench.standin_server`` in a process of its own."""

    def __init__(
        self, jobs: int, latency: float, workdir: Path, *, extra: tuple[str, ...] = ()
    ) -> None:
        self.jobs_file = workdir / f"standin-jobs-{jobs}.txt"
        self.log_path = workdir / f"standin-{jobs}.log"
        self.command = [
            sys.executable,
            "-m",
            "bench.standin_server",
            "--jobs",
            str(jobs),
            "--latency",
            str(latency),
            "--jobs-file",
            str(self.jobs_file),
            *extra,
        ]
        self.url = ""
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> StandinProcess:
        self._log = self.log_path.open("w")
        self._process = subprocess.Popen(
            self.command, cwd=ROOT, stdout=subprocess.PIPE, stderr=self._log, text=True
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if not line.startswith("ready "):
            self.__exit__()
            message = f"the stand-in did not start: {self.log_path.read_text()[-2000:]}"
            raise RuntimeError(message)
        self.url = line.removeprefix("ready ")
        return self

    def job_ids(self) -> list[str]:
        return self.jobs_file.read_text(encoding="utf-8").split()

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        self._log.close()


def seed_stuck(database: Database, job_ids: list[str]) -> None:
    """Add one submission per job, processing and untouched for an hour: stuck."""
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
        if report.inserted != len(job_ids):
            message = f"seeded {report.inserted} of {len(job_ids)} submissions"
            raise RuntimeError(message)
        table = Submission.__table__  # type: ignore[attr-defined]
        an_hour_ago = utcnow() - timedelta(hours=1)
        with engine.begin() as conn:
            conn.execute(
                sa.update(table).values(
                    created_at=an_hour_ago,
                    updated_at=an_hour_ago,
                    submitted_at=an_hour_ago,
                    provider_status="queued",
                )
            )
    finally:
        engine.dispose()


def run_one(
    database: Database, *, jobs: int, latency: float, workdir: Path, progress: Any = print
) -> ReconcileRun:
    """Seed N stuck submissions, serve N jobs, run one pass in a fresh process."""
    database.reset()
    with StandinProcess(jobs, latency, workdir) as standin:
        seed_stuck(database, standin.job_ids())
        env = service_env(
            database,
            ITTYBIT_API_URL=standin.url,
            ITTYBIT_API_KEY=DEFAULT_API_KEY,
            LOG_LEVEL="warning",
        )
        settings = Settings.from_env(env)
        load = " ".join(f"{value:.2f}" for value in __import__("os").getloadavg())
        with (workdir / f"reconcile-{database.name}-{jobs}.log").open("w") as log:
            finished = subprocess.run(
                [sys.executable, "-m", "bench.reconcile_worker"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                check=False,
            )
    lines = [line for line in finished.stdout.splitlines() if line.startswith('{"bench"')]
    if not lines:
        message = f"the reconcile pass gave no result (exit {finished.returncode})"
        raise RuntimeError(message)
    result = json.loads(lines[-1])
    summary = result["summary"]
    checked = summary["checked"]
    seconds = summary["seconds"] or result["seconds"]
    concurrency = settings.reconcile_concurrency
    ideal = concurrency / latency
    rate = checked / seconds if seconds else 0.0
    progress(f"reconcile: {database.name} N={jobs}: {rate:.1f} jobs/s of {ideal:.0f} ideal")
    return ReconcileRun(
        database=database.name,
        jobs=jobs,
        concurrency=concurrency,
        latency_ms=latency * 1000,
        checked=checked,
        updated=summary["updated"],
        unchanged=summary["unchanged"],
        errors=summary["errors"],
        seconds=round(seconds, 2),
        jobs_per_s=round(rate, 1),
        ideal_per_s=round(ideal, 1),
        ratio=round(rate / ideal, 3),
        statements_per_job=round(result["statements"] / max(checked, 1), 2),
        transactions_per_job=round(result["transactions"] / max(checked, 1), 2),
        peak_rss_mib=result["peak_rss_mib"],
        load=load,
    )


def run_reconcile_suite(
    databases: list[Database],
    *,
    sizes: list[int],
    latency: float,
    workdir: Path,
    progress: Any = print,
) -> list[ReconcileRun]:
    """Run one pass per database and N."""
    return each_size(
        "reconcile",
        databases,
        sizes,
        lambda database, jobs: run_one(
            database, jobs=jobs, latency=latency, workdir=workdir, progress=progress
        ),
        progress,
    )
