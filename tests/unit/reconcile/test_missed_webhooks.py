"""Are webhooks arriving? The reconcile pass counts listed events no webhook brought in time.

The stand-in sends every event to the receiver, served over real HTTP, and drops a seeded
share of the deliveries; the pass after WEBHOOK_SILENCE_AFTER counts exactly those.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy.engine import Engine
from werkzeug.serving import WSGIRequestHandler, make_server

from devtools.standin import Standin, StandinConfig
from receiver.observe.metrics import Metrics
from receiver.store.models import utcnow
from tests.event_feed_helpers import add_submissions_for, an_hour_ago, create_jobs, reconciler
from tests.helpers import WEBHOOK_SECRET

pytestmark = pytest.mark.usefixtures("no_retry_waits")

WINDOW = 600.0


class _Quiet(WSGIRequestHandler):
    disable_nagle_algorithm = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


@pytest.fixture
def receiver_url(app: Flask) -> Iterator[str]:
    """The receiver app served over HTTP on 127.0.0.1, as ittybit reaches it."""
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join()


def start(receiver_url: str, drop_rate: float) -> Standin:
    config = StandinConfig(
        step=0.02,
        seed=21,
        drop_rate=drop_rate,
        project_url=f"{receiver_url}/webhooks/ittybit",
        webhook_secret=WEBHOOK_SECRET,
        retry_base=0.02,
        retry_max_delay=0.1,
    )
    return Standin(config).start()


def dropped_events(standin: Standin) -> set[str]:
    return {item.event_id for item in standin.deliveries() if item.state == "dropped"}


def test_the_pass_after_the_window_counts_what_was_dropped(
    engine: Engine, receiver_url: str
) -> None:
    with start(receiver_url, drop_rate=0.3) as standin:
        with reconciler(engine, standin, owner="first", silence_after=WINDOW) as first:
            first.run_pass()  # an empty list: later passes read it from its beginning
        jobs = create_jobs(standin, 20)
        add_submissions_for(engine, jobs, changed_at=an_hour_ago())
        assert standin.wait_idle(20)
        dropped = dropped_events(standin)
        delivered = {item.event_id for item in standin.deliveries()} - dropped
        assert 0 < len(dropped) < len(delivered)  # the seed drops some, not all

        # Within the window every event still has time for its webhook: none is judged.
        with reconciler(engine, standin, silence_after=WINDOW) as now:
            early = now.run_pass()
        assert (early.webhooks_missed, early.webhooks_brought) == (0, 0)
        assert early.events_waiting == 3 * len(jobs)

        later = lambda: utcnow() + timedelta(seconds=WINDOW + 1)  # noqa: E731
        metrics = Metrics(engine)
        with reconciler(engine, standin, silence_after=WINDOW, clock=later) as after:
            after.metrics = metrics
            summary = after.run_pass()
    assert summary.webhooks_missed == len(dropped)
    assert metrics.registry.get_sample_value("jobhooks_webhooks_missed_total") == len(dropped)
    assert summary.webhooks_brought == len(delivered)
    assert summary.events_waiting == 0


def test_many_missed_in_a_row_log_webhooks_missing(
    engine: Engine, receiver_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with start(receiver_url, drop_rate=1.0) as standin:
        with reconciler(engine, standin, owner="first") as first:
            first.run_pass()
        jobs = create_jobs(standin, 3)
        add_submissions_for(engine, jobs, changed_at=an_hour_ago())
        assert standin.wait_idle(20)
        with caplog.at_level(logging.ERROR), reconciler(engine, standin) as one:
            summary = one.run_pass()
    assert summary.webhooks_missed == 6 == summary.webhooks_missed_streak
    [line] = [record for record in caplog.records if "webhooks_missing" in record.getMessage()]
    assert line.levelno == logging.ERROR
    data = line.data  # type: ignore[attr-defined]
    assert (data["event"], data["missed_in_a_row"]) == ("webhooks_missing", 6)
    assert data["since"].startswith(str(utcnow().date()))
    for hint in ("jobhooks ittybit endpoints", "ITTYBIT_WEBHOOK_SECRET", "PUBLIC_URL"):
        assert hint in line.getMessage()


def test_a_few_missed_say_nothing_at_error(
    engine: Engine, receiver_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with start(receiver_url, drop_rate=1.0) as standin:
        with reconciler(engine, standin, owner="first") as first:
            first.run_pass()
        jobs = create_jobs(standin, 2)
        add_submissions_for(engine, jobs, changed_at=an_hour_ago())
        assert standin.wait_idle(20)
        with caplog.at_level(logging.ERROR), reconciler(engine, standin) as one:
            summary = one.run_pass()
    assert summary.webhooks_missed == 4
    assert not [record for record in caplog.records if "webhooks_missing" in record.getMessage()]
