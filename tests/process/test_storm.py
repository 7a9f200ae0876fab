"""A delivery storm end to end: nothing is lost, nothing regresses, nothing is applied twice.

Real gunicorn (the Procfile's web line, two workers) receives the stand-in's webhooks over
HTTP for 500 submissions — 10% of deliveries dropped, 20% duplicated, 10% of jobs with
their ``processing`` delivered after the final state — and is restarted once in the
middle, so the deliveries in the gap must be retried. Then one reconcile pass runs, and
the database must agree with the stand-in's truth and with every answer it received.
PostgreSQL when TEST_DATABASE_URL is set, else SQLite.

The scale-out variant runs two web instances and two workers on one PostgreSQL, one web
worker killed with SIGKILL mid-storm, and the application told of each final state once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from config.settings import Settings
from devtools.notify_app import NotifyApp
from devtools.processes import (
    ROOT,
    WebProcess,
    WorkerProcess,
    base_env,
    free_port,
    jobhooks_command,
)
from devtools.standin import DeliveryRecord, Standin, StandinConfig
from receiver.flows.submit import submit_job
from receiver.ittybit.client import client_from_settings
from receiver.store.engines import create_db_engine
from receiver.store.models import (
    TERMINAL_STATUSES,
    Notification,
    Submission,
    WebhookEvent,
    utcnow,
)
from tests.conftest import empty_tables, postgres_url
from tests.helpers import SECRET_KEY, quiet_outbox
from tests.notify_helpers import NOTIFY_SECRET

pytestmark = pytest.mark.slow

SUBMISSIONS = 500
FINAL = {status.value for status in TERMINAL_STATUSES}


@pytest.fixture
def storm_database(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """One empty, migrated database: PostgreSQL when configured, else SQLite."""
    if postgres_url() is None:
        path = tmp_path / "storm.db"
        shutil.copyfile(sqlite_template, path)
        return f"sqlite:///{path}"
    engine: Engine = request.getfixturevalue("postgres_engine")
    empty_tables(engine)
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def standin() -> Iterator[Standin]:
    config = StandinConfig(
        seed=10,
        step=0.3,
        drop_rate=0.1,
        duplicate_rate=0.2,
        reorder_rate=0.1,
        retry_base=0.1,
        retry_max_delay=1.0,
        max_attempts=60,
        delivery_workers=8,
        # The exact accounting below needs every request the receiver handled to reach its
        # answer: on a loaded machine a few take longer than ittybit's 5 s, and a retry of
        # a delivery already committed is (rightly) answered duplicate.
        delivery_timeout=30.0,
    )
    with Standin(config).start() as running:
        yield running


def test_delivery_storm_converges_to_the_truth(
    storm_database: str, standin: Standin, tmp_path: Path
) -> None:
    port = free_port()
    env = base_env(
        {
            "APP_ENV": "test",
            "DATABASE_URL": storm_database,
            "SECRET_KEY": SECRET_KEY,
            "PUBLIC_URL": f"http://127.0.0.1:{port}",
            "PORT": str(port),
            "WEB_CONCURRENCY": "2",
            "LOG_LEVEL": "warning",
            "ITTYBIT_API_URL": standin.url,
            "ITTYBIT_API_KEY": standin.config.api_key,
        }
    )
    settings = Settings.from_env(env)
    engine = create_db_engine(settings)
    web = WebProcess(env, log_path=tmp_path / "web.log")
    web.start()
    try:
        submitted = _submit_with_a_restart(engine, settings, standin, web)
        assert standin.wait_idle(timeout=60), standin.stats()
        before = _statuses(engine)
        reconciled = subprocess.run(
            jobhooks_command("reconcile", "--older-than", "1ms", "--json"),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        web.stop()
    assert reconciled.returncode == 0, reconciled.stderr[-2000:]
    summary = json.loads(reconciled.stdout.strip().splitlines()[-1])
    try:
        _check(engine, standin, submitted, before, summary)
    finally:
        engine.dispose()


def _submit_with_a_restart(
    engine: Engine, settings: Settings, standin: Standin, web: WebProcess
) -> dict[str, str]:
    """Submit every job (4 at a time) while the receiver is restarted once; map sub → job."""
    jobs: dict[str, str] = {}
    errors: list[str] = []

    def submit(number: int) -> None:
        submission_id = f"sub_{number:04d}"
        kind = "fail" if number % 10 == 3 else "ok"
        result = submit_job(
            engine,
            client,
            settings,
            submission_id=submission_id,
            user_id=f"user_{number % 37}",
            input_url=f"https://uploads.example.com/{kind}/{number}.mp4",
            metadata={"campaign": "storm"},
            now=utcnow(),
            outbox=quiet_outbox(),
        )
        if result.error is not None or result.submission.job_id is None:
            errors.append(f"{submission_id}: {result.error}")
        else:
            jobs[submission_id] = result.submission.job_id

    with (
        client_from_settings(settings, max_connections=4) as client,
        ThreadPoolExecutor(max_workers=4) as pool,
    ):
        futures = [pool.submit(submit, number) for number in range(SUBMISSIONS)]
        deadline = time.monotonic() + 60
        # Restart once deliveries are flowing and plenty of jobs are still to come.
        while standin.stats().delivered < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        web.restart()
        for future in futures:
            future.result()
    assert errors == []
    return jobs


def _statuses(engine: Engine) -> dict[str, str]:
    table = Submission.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.submission_id, table.c.status)).all()
    return {submission_id: status for submission_id, status in rows}


def _check(
    engine: Engine,
    standin: Standin,
    submitted: dict[str, str],
    before: dict[str, str],
    summary: dict[str, Any],
) -> None:
    stats = standin.stats()
    truth = standin.jobs()
    records = standin.deliveries()
    by_job: dict[str, list[DeliveryRecord]] = defaultdict(list)
    for record in records:
        by_job[record.job_id].append(record)

    # The storm happened as asked: faults near their rates, and the restart forced retries.
    assert len(submitted) == SUBMISSIONS
    assert stats.jobs == SUBMISSIONS
    assert stats.planned == 2 * SUBMISSIONS
    assert 0.07 < stats.dropped / stats.planned < 0.13, stats
    assert 0.15 < stats.duplicated / stats.planned < 0.25, stats
    assert 0.06 < stats.reordered / SUBMISSIONS < 0.14, stats
    assert stats.retried > 0, "no delivery met the restart"
    assert (stats.given_up, stats.refused, stats.pending) == (0, 0, 0), stats

    # Every final state the stand-in failed to deliver was still open before reconciling;
    # the pass found exactly those, and nothing else.
    lost = {
        job_id
        for job_id, items in by_job.items()
        if all(r.state == "dropped" for r in items if r.status in FINAL)
    }
    open_before = {sid for sid, status in before.items() if status not in FINAL}
    assert open_before == {sid for sid, job_id in submitted.items() if job_id in lost}
    lost_failed = sum(1 for job_id in lost if truth[job_id]["status"] == "failed")
    assert (summary["checked"], summary["updated"], summary["failed"], summary["errors"]) == (
        len(lost),
        len(lost) - lost_failed,
        lost_failed,
        0,
    ), summary

    # Every submission now holds the truth.
    table = Submission.__table__  # type: ignore[attr-defined]
    inbox = WebhookEvent.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table)).mappings().all()
        events = conn.execute(sa.select(inbox).order_by(inbox.c.id)).mappings().all()
    assert len(rows) == SUBMISSIONS
    for row in rows:
        job = truth[submitted[row["submission_id"]]]
        assert row["job_id"] == job["id"]
        assert row["status"] == job["status"], row["submission_id"]
        assert row["output_url"] == (job["output"] or {}).get("url")
        assert (row["error"] is not None) == (job["status"] == "failed")

    # The receiver's answers, as the stand-in saw them, never went back from a final state.
    for items in by_job.values():
        answered = sorted((r for r in items if r.order is not None), key=lambda r: r.order or 0)
        seen_final = False
        for record in answered:
            assert record.answer_status == 200, record
            if seen_final:
                assert record.submission_status in FINAL, record
            seen_final = seen_final or record.submission_status in FINAL

    # The inbox agrees with the answers: one applied row per state change that arrived,
    # a stale row per reordered delivery, and duplicates answered but never stored.
    outcomes = Counter(event["outcome"] for event in events)
    assert set(outcomes) <= {"applied", "stale"}, outcomes
    assert outcomes["applied"] == stats.outcomes.get("applied", 0)
    assert outcomes["stale"] == stats.outcomes.get("stale", 0) == stats.reordered
    assert stats.outcomes.get("duplicate", 0) == stats.duplicated
    assert sum(stats.outcomes.values()) == stats.delivered

    applied: dict[str, list[str]] = defaultdict(list)
    for event in events:
        if event["outcome"] == "applied":
            applied[event["submission_id"]].append(event["provider_status"])
    for submission_id, job_id in submitted.items():
        changes = applied[submission_id]
        final_delivered = job_id not in lost
        assert changes.count(truth[job_id]["status"]) == int(final_delivered), submission_id
        assert len(changes) == len(set(changes)), (submission_id, changes)
        if len(changes) == 2:
            assert changes == ["processing", truth[job_id]["status"]], submission_id


# --- scale-out: two web instances and two workers on one PostgreSQL ---------------------------

SCALE_OUT_SUBMISSIONS = 300


@pytest.mark.postgres
def test_two_webs_and_two_workers_lose_nothing_and_notify_each_change_once(
    request: pytest.FixtureRequest, standin: Standin, tmp_path: Path
) -> None:
    """Two gunicorns (each its own port, each named in half of the jobs' webhook URLs) and
    two workers (passes and notifications) share one PostgreSQL through the storm; one web
    worker is killed with SIGKILL mid-storm. Every submission ends as ittybit says, and the
    application gets each final state's notification exactly once."""
    if postgres_url() is None:
        pytest.skip("PostgreSQL tests need TEST_DATABASE_URL")
    engine: Engine = request.getfixturevalue("postgres_engine")
    empty_tables(engine)
    database = engine.url.render_as_string(hide_password=False)
    with NotifyApp([NOTIFY_SECRET]) as application:
        envs = [_scale_out_env(database, standin, application, free_port()) for _ in range(2)]
        webs = [WebProcess(env, log_path=tmp_path / f"web{i}.log") for i, env in enumerate(envs)]
        # The worker says it is ready at INFO.
        workers = [
            WorkerProcess({**env, "LOG_LEVEL": "info"}, log_path=tmp_path / f"worker{i}.log")
            for i, env in enumerate(envs)
        ]
        started = time.monotonic()
        try:
            for process in [*webs, *workers]:
                process.start()
            submitted = _submit_across(engine, [Settings.from_env(env) for env in envs], webs)
            assert standin.wait_idle(timeout=120), standin.stats()
            settled = _wait_settled(engine, standin, application, submitted, timeout=180)
        finally:
            for worker in workers:
                worker.stop()
            for web in webs:
                web.stop()
        received = application.received
    seconds = time.monotonic() - started
    print(f"scale-out storm: {SCALE_OUT_SUBMISSIONS} submissions in {seconds:.1f}s")
    assert settled, _scale_out_state(engine, standin, submitted, received)
    _check_scale_out(engine, standin, submitted, received)
    _check_both_webs_delivered_to(standin, submitted, [env["PUBLIC_URL"] for env in envs])


def _scale_out_env(
    database: str, standin: Standin, application: NotifyApp, port: int
) -> dict[str, str]:
    return base_env(
        {
            "APP_ENV": "test",
            "DATABASE_URL": database,
            "SECRET_KEY": SECRET_KEY,
            "PUBLIC_URL": f"http://127.0.0.1:{port}",
            "PORT": str(port),
            "WEB_CONCURRENCY": "2",
            "LOG_LEVEL": "warning",
            "ITTYBIT_API_URL": standin.url,
            "ITTYBIT_API_KEY": standin.config.api_key,
            "NOTIFY_URL": application.url,
            "NOTIFY_SECRET": NOTIFY_SECRET,
            # Passes every second, polling what no webhook settled for 3 s: the workers
            # recover the dropped deliveries while the storm is still on.
            "RECONCILE_INTERVAL": "1s",
            "STUCK_AFTER": "3s",
        }
    )


def _submit_across(
    engine: Engine, settings: list[Settings], webs: list[WebProcess]
) -> dict[str, str]:
    """Submit every job, each web named in every other job's webhook URL; SIGKILL one of
    the first web's gunicorn workers once deliveries flow. Map submission → job."""
    jobs: dict[str, str] = {}
    errors: list[str] = []

    def submit(number: int) -> None:
        submission_id = f"sub_{number:04d}"
        kind = "fail" if number % 10 == 3 else "ok"
        result = submit_job(
            engine,
            client,
            settings[number % 2],
            submission_id=submission_id,
            user_id=f"user_{number % 37}",
            input_url=f"https://uploads.example.com/{kind}/{number}.mp4",
            metadata={"campaign": "storm"},
            now=utcnow(),
            outbox=quiet_outbox(),
        )
        if result.error is not None or result.submission.job_id is None:
            errors.append(f"{submission_id}: {result.error}")
        else:
            jobs[submission_id] = result.submission.job_id

    with (
        client_from_settings(settings[0], max_connections=4) as client,
        ThreadPoolExecutor(max_workers=4) as pool,
    ):
        futures = [pool.submit(submit, number) for number in range(SCALE_OUT_SUBMISSIONS)]
        time.sleep(2)  # deliveries are flowing: kill a gunicorn worker in the middle of them
        master = webs[0].pid
        assert master is not None
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        os.kill(int(children[0]), signal.SIGKILL)
        for future in futures:
            future.result()
    assert errors == []
    return jobs


def _wait_settled(
    engine: Engine,
    standin: Standin,
    application: NotifyApp,
    submitted: dict[str, str],
    *,
    timeout: float,
) -> bool:
    """Wait until every submission holds ittybit's final state and was announced."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        truth = standin.jobs()
        statuses = _statuses(engine)
        settled = all(statuses.get(sid) == truth[job]["status"] for sid, job in submitted.items())
        announced = {item.webhook_id for item in application.received}
        if settled and len(announced) >= len(submitted):
            time.sleep(2)  # a second send of anything would arrive meanwhile
            return True
        time.sleep(0.5)
    return False


def _scale_out_state(
    engine: Engine, standin: Standin, submitted: dict[str, str], received: list[Any]
) -> str:
    truth = standin.jobs()
    statuses = _statuses(engine)
    wrong = {
        sid: (statuses.get(sid), truth[job]["status"])
        for sid, job in submitted.items()
        if statuses.get(sid) != truth[job]["status"]
    }
    return f"{len(wrong)} not settled, e.g. {list(wrong.items())[:5]}; {len(received)} received"


def _check_scale_out(
    engine: Engine, standin: Standin, submitted: dict[str, str], received: list[Any]
) -> None:
    stats = standin.stats()
    truth = standin.jobs()
    assert len(submitted) == SCALE_OUT_SUBMISSIONS
    assert stats.dropped > 0 and stats.duplicated > 0 and stats.reordered > 0, stats
    assert (stats.given_up, stats.refused, stats.pending) == (0, 0, 0), stats
    # Nothing lost: every submission holds the truth.
    statuses = _statuses(engine)
    for submission_id, job_id in submitted.items():
        assert statuses[submission_id] == truth[job_id]["status"], submission_id
    # Each final state announced once: one request per notification, verified and applied.
    assert all(item.verified and item.applied and item.attempt == 1 for item in received)
    by_submission = Counter(item.submission_id for item in received)
    assert set(by_submission) == set(submitted)
    assert set(by_submission.values()) == {1}, by_submission.most_common(3)
    for item in received:
        assert item.type == f"submission.{truth[submitted[item.submission_id]]['status']}"
    table = Notification.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.status, table.c.attempts)).all()
    assert Counter(status for status, _ in rows) == {"delivered": SCALE_OUT_SUBMISSIONS}
    assert {attempts for _, attempts in rows} == {1}


def _check_both_webs_delivered_to(
    standin: Standin, submitted: dict[str, str], public_urls: list[str]
) -> None:
    """Each web is named in the webhook URL of its half of the jobs, and got deliveries."""
    delivered = {record.job_id for record in standin.deliveries() if record.order is not None}
    headers = {"Authorization": f"Bearer {standin.config.api_key}"}
    with httpx.Client(base_url=standin.url, headers=headers) as api:
        for web, public_url in enumerate(public_urls):
            jobs = [job for sid, job in submitted.items() if int(sid[-4:]) % 2 == web]
            assert delivered & set(jobs), public_url
            job = api.get(f"/jobs/{jobs[0]}").json()
            assert job["webhook_url"].startswith(f"{public_url}/webhooks/ittybit/")
