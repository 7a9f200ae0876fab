"""The real processes: the ``reconcile --loop`` worker stops cleanly on SIGTERM, and bad
configuration stops ``reconcile`` and ``submit`` with one line and exit status 2."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from receiver.store.engines import create_db_engine
from tests.helpers import SECRET_KEY
from tests.reconcile_helpers import API_KEY, FakeIttybit, add_submissions, rows

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "worker.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


def start_worker(database_url: str, api_url: str, *args: str) -> subprocess.Popen[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "APP_ENV": "test",
        "SECRET_KEY": SECRET_KEY,
        "PUBLIC_URL": "https://hooks.example.com",
        "DATABASE_URL": database_url,
        "ITTYBIT_API_URL": api_url,
        "ITTYBIT_API_KEY": API_KEY,
        "RECONCILE_CONCURRENCY": "2",
        "PYTHONUNBUFFERED": "1",
        "LOG_LEVEL": "INFO",
    }
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "jobhooks"), "reconcile", "--loop", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(event: threading.Event, worker: subprocess.Popen[str], timeout: float = 60) -> None:
    """Wait for ``event`` while the worker runs; fail with its output if it dies or hangs."""
    deadline = time.monotonic() + timeout
    while not event.wait(0.1):
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            out, err = worker.communicate()
            pytest.fail(f"the worker never asked for a job (exit {worker.returncode}):\n{out}{err}")


def records(out: str) -> list[dict[str, Any]]:
    """Return the JSON lines of a worker's output."""
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def stop(worker: subprocess.Popen[str]) -> tuple[int, str, str]:
    worker.send_signal(signal.SIGTERM)
    try:
        out, err = worker.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()
        out, err = worker.communicate()
        pytest.fail(f"worker did not stop on SIGTERM:\n{out}\n{err}")
    return worker.returncode, out, err


def test_sigterm_during_a_pass_finishes_the_jobs_in_hand_and_exits_0(
    sqlite_url: str, fake: FakeIttybit
) -> None:
    settings = Settings.from_env(
        {"APP_ENV": "test", "SECRET_KEY": SECRET_KEY, "DATABASE_URL": sqlite_url}
    )
    engine = create_db_engine(settings)
    try:
        add_submissions(engine, range(20), changed_at=datetime.now(UTC) - timedelta(hours=1))
        for key in range(20):
            fake.job(f"job_{key}", "succeeded")
        fake.delay = 0.5
        first_request = threading.Event()
        fake.on_get = lambda _key: first_request.set()

        worker = start_worker(sqlite_url, fake.url, "--interval", "60s")
        wait_for(first_request, worker)
        code, out, err = stop(worker)

        assert code == 0, err
        # The worker logs to stdout, as one JSON line per event, like the web process.
        assert "SIGTERM received" in out
        assert "reconcile loop stopped" in out
        job_lines = [
            record
            for record in (json.loads(line) for line in out.splitlines() if line.startswith("{"))
            if record["logger"] == "reconcile.passes" and "result" in record
        ]
        assert len(job_lines) >= 1, out
        stored = rows(engine)
    finally:
        engine.dispose()
    done = [row for row in stored.values() if row["status"] == "succeeded"]
    untouched = [row for row in stored.values() if row["status"] == "processing"]
    assert len(done) + len(untouched) == 20
    assert 1 <= len(done) < 20, "it should finish the jobs in hand, and only those"
    for row in done:
        assert row["output_url"] == f"https://cdn.example.com/{row['job_id']}.mp4"
        assert row["poll_attempts"] == 1
        assert row["last_polled_at"] is not None
    for row in untouched:
        assert (row["poll_attempts"], row["last_polled_at"], row["poll_error"]) == (0, None, None)
    # Nothing is left leased: the next worker takes over at once.
    assert {row["lease_owner"] for row in stored.values()} == {None}
    assert {row["lease_until"] for row in stored.values()} == {None}
    # The pass reported what it did before stopping, as one JSON line like every other.
    passes = [record for record in records(out) if record.get("event") == "reconcile_pass"]
    assert [record["updated"] for record in passes] == [len(done)]
    assert passes[0]["stopped"] is True


def test_sigterm_between_passes_exits_0_at_once(sqlite_url: str, fake: FakeIttybit) -> None:
    worker = start_worker(sqlite_url, fake.url, "--interval", "1h")
    assert worker.stdout is not None
    seen = []
    for line in worker.stdout:  # until the first pass's line: then it sleeps
        seen.append(line)
        if '"event": "reconcile_pass"' in line:
            break
    code, out, err = stop(worker)
    assert code == 0, err
    # Every line the worker writes is one JSON object (LOG_FORMAT=json, the default).
    lines = [*seen, *out.splitlines()]
    assert lines, err
    for line in lines:
        assert isinstance(json.loads(line), dict), line
    assert json.loads(seen[-1])["checked"] == 0


@pytest.mark.parametrize(
    ("command", "variables", "message"),
    [
        (
            ["reconcile"],
            {"RECONCILE_BATCH": "lots"},
            "jobhooks: configuration error: RECONCILE_BATCH: must be a whole number, got 'lots'",
        ),
        (
            ["reconcile", "--loop"],
            {"ITTYBIT_API_KEY": ""},
            "jobhooks: configuration error: ITTYBIT_API_KEY: required by submit and reconcile",
        ),
        (
            ["submit", "--input", "https://example.com/a.mp4", "--user-id", "u"],
            {"ITTYBIT_API_KEY": ""},
            "jobhooks: configuration error: ITTYBIT_API_KEY: required by submit and reconcile",
        ),
    ],
)
@pytest.mark.parametrize(
    "launcher",
    [[str(Path(sys.executable).parent / "jobhooks")]],
    ids=["jobhooks"],
)
def test_bad_configuration_exits_2_with_one_line(
    sqlite_url: str,
    command: list[str],
    variables: dict[str, str],
    message: str,
    launcher: list[str],
) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "APP_ENV": "test",
        "SECRET_KEY": SECRET_KEY,
        "DATABASE_URL": sqlite_url,
        "ITTYBIT_API_URL": "http://127.0.0.1:9",
        "ITTYBIT_API_KEY": API_KEY,
        **variables,
    }
    result = subprocess.run(
        [*launcher, *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [message]
