"""Several reconcilers at once: leases mean each stuck job is fetched once per pass."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from config.settings import Settings
from receiver.ittybit.client import IttybitClient
from receiver.store.engines import create_db_engine
from reconcile.passes import PassOptions, Reconciler
from reconcile.summary import Summary
from tests.helpers import SECRET_KEY, quiet_outbox
from tests.reconcile_helpers import API_KEY, FakeIttybit, add_submissions, rows

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


pytestmark = pytest.mark.usefixtures("no_retry_waits")


@pytest.mark.slow
def test_three_reconcilers_fetch_each_of_300_jobs_once(
    database_url: str, fake: FakeIttybit
) -> None:
    settings = Settings.from_env(
        {"APP_ENV": "test", "SECRET_KEY": SECRET_KEY, "DATABASE_URL": database_url}
    )
    engines = [create_db_engine(settings) for _ in range(3)]
    add_submissions(engines[0], range(300), changed_at=NOW - timedelta(hours=1))
    for key in range(300):
        fake.job(f"job_{key}", "succeeded")
    fake.delay = 0.002  # long enough for the passes to overlap
    options = PassOptions(batch=20, concurrency=4, lease_seconds=300.0)
    start = threading.Barrier(3)
    summaries: list[Summary] = []
    failures: list[BaseException] = []

    def run(index: int) -> None:
        with IttybitClient(base_url=fake.url, api_key=API_KEY, max_connections=4) as client:
            reconciler = Reconciler(
                engines[index],
                client,
                options,
                outbox=quiet_outbox(),
                clock=lambda: NOW,
                owner=f"reconciler-{index}",
            )
            start.wait()
            try:
                summaries.append(reconciler.run_pass())
            except BaseException as exc:
                failures.append(exc)
                raise

    threads = [threading.Thread(target=run, args=(index,)) for index in range(3)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        for engine in engines:
            engine.dispose()

    assert failures == []
    assert len(summaries) == 3
    assert sorted(fake.requests.values()) == [1] * 300, "some job was fetched twice"
    assert len(fake.requests) == 300
    assert sum(summary.checked for summary in summaries) == 300
    assert sum(summary.updated for summary in summaries) == 300
    assert all(summary.errors == 0 for summary in summaries)
    check = create_db_engine(settings)
    try:
        stored = rows(check)
    finally:
        check.dispose()
    assert {row["status"] for row in stored.values()} == {"succeeded"}
    assert {row["lease_owner"] for row in stored.values()} == {None}
    assert {row["poll_attempts"] for row in stored.values()} == {1}
