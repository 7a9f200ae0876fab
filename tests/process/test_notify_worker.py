"""The real processes: the ``worker`` delivers notifications fast when idle and stops cleanly
on SIGTERM; a sender killed with SIGKILL mid-delivery is taken over after its lease, and the
application sees the same ``webhook-id`` again."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from sqlalchemy.engine import Engine

from config.settings import Settings
from devtools.notify_app import Answer, NotifyApp
from devtools.processes import ROOT, base_env, jobhooks_command
from receiver import create_app
from receiver.store.engines import create_db_engine, get_engine
from tests.helpers import SECRET_KEY, WEBHOOK_SECRET, job_payload, token_url
from tests.notify_helpers import NOTIFY_SECRET, add_submissions, change, notifications, outbox_to
from tests.unit.web.test_webhooks import post

pytestmark = pytest.mark.slow


class Process:
    """A ``jobhooks`` command running in the background, its output in a file."""

    def __init__(self, database_url: str, log_path: Path, *args: str, **env: str) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        environment = base_env(
            {
                "APP_ENV": "test",
                "SECRET_KEY": SECRET_KEY,
                "DATABASE_URL": database_url,
                "ITTYBIT_API_URL": "http://127.0.0.1:9",
                "ITTYBIT_API_KEY": "test-api-key",
                "LOG_LEVEL": "info",
                **env,
            }
        )
        self.process = subprocess.Popen(
            jobhooks_command(*args), cwd=ROOT, env=environment, stdout=self._log, stderr=self._log
        )

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                code = self.process.returncode
                pytest.fail(f"never saw {text!r} (exit {code}):\n{self.output()}")
            time.sleep(0.05)

    def terminate(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"did not stop on SIGTERM:\n{self.output()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self._log.close()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.output().splitlines() if line.startswith("{")]


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()


@pytest.fixture
def application() -> Iterator[NotifyApp]:
    with NotifyApp([NOTIFY_SECRET]) as app:
        yield app


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    settings = Settings.from_env(
        {"APP_ENV": "test", "SECRET_KEY": SECRET_KEY, "DATABASE_URL": database_url}
    )
    engine = create_db_engine(settings)
    yield engine
    engine.dispose()


def test_sigkill_mid_delivery_sends_the_same_webhook_id_again_after_the_lease(
    database_url: str,
    db: Engine,
    application: NotifyApp,
    processes: list[Process],
    tmp_path: Path,
) -> None:
    arrived, release = threading.Event(), threading.Event()

    def hold_the_first(_webhook_id: str, attempt: int, _body: dict[str, Any]) -> Answer:
        if attempt == 1:
            arrived.set()
            release.wait(30)  # its sender is killed meanwhile: the answer goes nowhere
        return Answer(204)

    application.answer = hold_the_first
    [sid] = add_submissions(db, 1)
    change(db, outbox_to(application.url), sid, "succeeded")
    env = {"NOTIFY_URL": application.url, "NOTIFY_SECRET": NOTIFY_SECRET}

    args = ("notify", "--loop", "--lease", "16s")
    first = Process(database_url, tmp_path / "first.log", *args, **env)
    processes.append(first)
    assert arrived.wait(30), first.output()
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=10)
    release.set()
    [held] = notifications(db)
    assert (held["status"], held["attempts"]) == ("pending", 0)
    assert held["lease_owner"] is not None

    # The worker of the Procfile takes it over once the lease has run out.
    worker = Process(database_url, tmp_path / "worker.log", "reconcile", "--loop", **env)
    processes.append(worker)
    assert application.wait_requests(2, timeout=40), worker.output()
    killed, again = application.received
    assert again.webhook_id == killed.webhook_id == held["message_id"]
    assert again.at - killed.at >= 16 - 0.5
    # The application had applied the first copy (only its answer was lost): it dedupes
    # the second on its webhook-id and answers 2xx again.
    assert (killed.applied, again.verified, again.applied, again.status) == (True, True, False, 204)
    deadline = time.monotonic() + 10
    while notifications(db)[0]["status"] != "delivered" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.terminate() == 0, worker.output()
    [row] = notifications(db)
    assert (row["status"], row["attempts"], row["lease_owner"]) == ("delivered", 1, None)
    attempts = [line for line in worker.lines() if line.get("event") == "notification_attempt"]
    assert [(line["message_id"], line["status"]) for line in attempts] == [
        (held["message_id"], 204)
    ]


def test_the_worker_delivers_within_two_seconds_and_stops_cleanly_on_sigterm(
    app_config: dict[str, Any],
    database_url: str,
    application: NotifyApp,
    processes: list[Process],
    tmp_path: Path,
) -> None:
    app_config.update(NOTIFY_URL=application.url, NOTIFY_SECRET=NOTIFY_SECRET)
    app = create_app(app_config)
    client, engine = app.test_client(), get_engine(app)
    try:
        env = {
            "NOTIFY_URL": application.url,
            "NOTIFY_SECRET": NOTIFY_SECRET,
            "ITTYBIT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        }
        worker = Process(database_url, tmp_path / "worker.log", "reconcile", "--loop", **env)
        processes.append(worker)
        worker.wait_for("delivering notifications until SIGTERM")
        worker.wait_for("reconcile pass")
        ids = add_submissions(engine, 5)
        latencies = []
        for number, sid in enumerate(ids, start=1):
            payload = job_payload(f"job_{sid}", submission_id=sid)
            answer = post(client, token_url(sid), payload, msg_id=f"m{number}")
            answered = time.time()
            assert answer.status_code == 200
            assert application.wait_applied(number, timeout=10)
            latencies.append(application.applied[-1].at - answered)
            time.sleep(0.3)  # idle again: the next one is found by the idle poll
        assert max(latencies) < 2.0, latencies

        # SIGTERM while a delivery is under way: it is finished and recorded, then both
        # loops stop and the process exits 0.
        arrived = threading.Event()

        def slow(_webhook_id: str, _attempt: int, _body: dict[str, Any]) -> Answer:
            arrived.set()
            time.sleep(1.0)
            return Answer(200)

        application.answer = slow
        [last] = add_submissions(engine, 1, prefix="late")
        payload = job_payload(f"job_{last}", submission_id=last)
        assert post(client, token_url(last), payload, msg_id="m-last").status_code == 200
        assert arrived.wait(10)
        assert worker.terminate() == 0, worker.output()
    finally:
        engine.dispose()
    output = worker.output()
    assert "notify loop stopped" in output
    assert "reconcile loop stopped" in output
    reader = create_db_engine(app.extensions["jobhooks.settings"])
    try:
        rows = notifications(reader)
    finally:
        reader.dispose()
    assert {row["status"] for row in rows} == {"delivered"}
    assert {row["lease_owner"] for row in rows} == {None}
