"""The worker never dies of one bad answer, and never loses a lease it still needs."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.engine import Engine

from config.settings import Settings
from receiver.cli.reconcile import _run_loop
from receiver.ittybit.client import IttybitClient
from receiver.observe.metrics import get_metrics
from receiver.store.engines import create_db_engine
from receiver.store.models import utcnow
from reconcile.passes import PassOptions, Reconciler
from tests.helpers import SECRET_KEY, quiet_outbox
from tests.reconcile_helpers import API_KEY, FakeIttybit, Scripted, add_submissions, rows

pytestmark = pytest.mark.usefixtures("no_retry_waits")


def test_an_answer_that_cannot_be_decoded_is_a_poll_error_on_that_job_alone(
    engine: Engine, fake: FakeIttybit
) -> None:
    now = datetime.now(UTC)
    add_submissions(engine, ["bad", "good"], changed_at=now - timedelta(hours=1))
    fake.job("job_good", "succeeded")
    fake.job("job_bad", "succeeded")
    # A gzip header on a body that is no gzip stream: the client cannot decode it.
    fake.script("job_bad", Scripted(200, {"id": "job_bad"}, {"Content-Encoding": "gzip"}))
    with IttybitClient(base_url=fake.url, api_key=API_KEY) as client:
        summary = Reconciler(engine, client, PassOptions(), outbox=quiet_outbox()).run_pass()
    assert (summary.checked, summary.updated, summary.errors) == (2, 1, 1)
    stored = rows(engine)
    assert stored["sub_good"]["status"] == "succeeded"
    bad = stored["sub_bad"]
    assert bad["status"] == "processing"
    assert bad["poll_error"] == "GET /jobs/job_bad: the answer could not be decoded"
    assert bad["poll_attempts"] == 1
    assert bad["next_poll_at"] is not None  # backed off, not retried at once
    assert bad["lease_owner"] is None


class Crashing(Reconciler):
    """A reconciler whose first pass meets a bug; the loop stops after the second."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.passes = 0

    def run_pass(self) -> Any:
        self.passes += 1
        if self.passes == 1:
            raise KeyError("a bug nobody foresaw")
        self.stop.set()
        return super().run_pass()


def test_the_worker_survives_any_exception_in_a_pass(
    app: Flask, engine: Engine, fake: FakeIttybit, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = get_metrics(app)
    with IttybitClient(base_url=fake.url, api_key=API_KEY) as client:
        worker = Crashing(engine, client, PassOptions(), outbox=quiet_outbox(), metrics=metrics)
        with caplog.at_level(logging.INFO):
            _run_loop(worker, 0.01, as_json=False)
    assert worker.passes == 2
    [failure] = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert failure.getMessage() == "reconcile pass failed: KeyError"
    assert failure.exc_info is not None  # the traceback goes with the line
    assert failure.data["event"] == "reconcile_pass_failed"  # type: ignore[attr-defined]
    crashed = metrics.reconcile_passes.labels("crashed")._value.get()
    ok = metrics.reconcile_passes.labels("ok")._value.get()
    assert (crashed, ok) == (1, 1)
    assert "reconcile loop stopped" in caplog.text


def test_leases_are_renewed_while_rows_wait_so_no_job_is_fetched_twice(
    database_url: str, fake: FakeIttybit
) -> None:
    """Fetches outlast the lease: without renewal, a second reconciler takes rows the
    first still holds and both fetch them."""
    settings = Settings.from_env(
        {"APP_ENV": "test", "SECRET_KEY": SECRET_KEY, "DATABASE_URL": database_url}
    )
    engines = [create_db_engine(settings) for _ in range(2)]
    # Two rows, both in the first reconciler's hands from the start: the second waits a
    # whole fetch (0.6 s) before its own, and its lease (0.9 s) would run out half-way.
    add_submissions(engines[0], range(2), changed_at=utcnow() - timedelta(hours=1))
    for key in range(2):
        fake.job(f"job_{key}", "succeeded")
    fake.delay = 0.6
    slow = PassOptions(concurrency=1, lease_seconds=0.9)
    done = threading.Event()

    def second() -> None:
        with IttybitClient(base_url=fake.url, api_key=API_KEY) as client:
            other = Reconciler(engines[1], client, slow, outbox=quiet_outbox(), owner="second")
            while not done.is_set():
                other.run_pass()
                time.sleep(0.05)

    try:
        with IttybitClient(base_url=fake.url, api_key=API_KEY) as client:
            first = Reconciler(engines[0], client, slow, outbox=quiet_outbox(), owner="first")
            thread = threading.Thread(target=second)
            first_pass = threading.Thread(target=first.run_pass)
            first_pass.start()
            time.sleep(0.1)  # the first holds its leases before the second starts
            thread.start()
            first_pass.join(30)
            done.set()
            thread.join(30)
        assert {f"job_{key}": 1 for key in range(2)} == dict(fake.requests)
        assert {row["status"] for row in rows(engines[0]).values()} == {"succeeded"}
    finally:
        for engine in engines:
            engine.dispose()
