"""The reconciler reads ittybit's event list first, and polls only what it left stuck.

Against the stand-in over HTTP, counting the requests it answered.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient, FlaskCliRunner
from pytest_httpserver import HTTPServer
from sqlalchemy.engine import Engine

from config.settings import Settings
from devtools.standin import DEFAULT_API_KEY, Standin, StandinConfig, running
from receiver import create_app
from receiver.cli.reconcile import _run_loop
from receiver.ittybit.client import IttybitClient
from receiver.store.engines import create_db_engine, get_engine
from receiver.store.models import WebhookEvent, utcnow
from reconcile import event_cursor, event_list
from reconcile.passes import PassOptions, Reconciler
from reconcile.summary import Summary
from tests.event_feed_helpers import (
    add_submissions_for,
    an_hour_ago,
    counting_outbox,
    create_jobs,
    feed_row,
    notification_count,
    reconciler,
    statuses,
)
from tests.helpers import (
    SECRET_KEY,
    add_submission,
    encode,
    quiet_outbox,
    signed_headers,
    stored_events,
    token_url,
)
from tests.unit.observe.test_metrics import scrape, value

pytestmark = pytest.mark.usefixtures("no_retry_waits")

PROJECT_URL = "/webhooks/ittybit"
_events = WebhookEvent.__table__  # type: ignore[attr-defined]


@pytest.fixture
def standin() -> Iterator[Standin]:
    """A stand-in whose jobs finish quickly; none has a webhook URL, so no webhook comes."""
    with running(StandinConfig(step=0.02)) as server:
        yield server


def start_feed(engine: Engine, standin: Standin) -> Summary:
    """Run a first pass on an empty list: the feed then starts at the list's beginning."""
    with reconciler(engine, standin, owner="first") as first:
        return first.run_pass()


def test_a_pass_over_an_empty_list_costs_one_request(engine: Engine, standin: Standin) -> None:
    summary = start_feed(engine, standin)
    assert standin.request_counts() == {"GET /events": 1}
    assert summary.event_pages == 1
    assert summary.events_note == (
        "first pass: the list is empty; later passes read it from its beginning"
    )
    row = feed_row(engine)
    assert row is not None
    assert (row["api_url"], row["cursor"], row["lease_owner"]) == (standin.url, None, None)
    assert row["started_at"] is not None

    standin.reset_request_counts()
    with reconciler(engine, standin) as again:
        summary = again.run_pass()
    assert standin.request_counts() == {"GET /events": 1}
    assert (summary.event_pages, summary.events_read, summary.checked) == (1, 0, 0)


@pytest.mark.slow
def test_500_dropped_finals_are_settled_by_one_pass_in_at_most_10_requests(
    engine: Engine,
) -> None:
    """The worker read each job's first events while it ran; the final webhooks were lost.

    Today's polls would make 500 requests. The pass reads the 500 final events in five
    pages and has nothing left to poll.
    """
    with running(StandinConfig(step=0.02, hold_finals=True)) as standin:
        start_feed(engine, standin)
        jobs = create_jobs(standin, 500)
        add_submissions_for(engine, jobs, changed_at=an_hour_ago())
        assert standin.wait_idle(30)
        # An earlier pass of the worker, while the jobs ran: their first events.
        with reconciler(engine, standin, owner="earlier", stuck_after=3600.0) as earlier:
            before = earlier.run_pass()
        assert before.events_read == 1000
        assert set(statuses(engine).values()) == {"processing"}
        # The outage: every job finishes, and no webhook says so.
        assert standin.finish_held() == 500
        assert standin.wait_idle(30)

        standin.reset_request_counts()
        with reconciler(engine, standin, owner="after-outage") as after:
            summary = after.run_pass()
        requests = standin.request_counts()

    assert set(statuses(engine).values()) == {"succeeded"}
    assert sum(requests.values()) <= 10, requests
    assert requests == {"GET /events": 5}
    assert (summary.event_pages, summary.events_read, summary.events_applied) == (5, 500, 500)
    assert (summary.checked, summary.errors, summary.events_more) == (0, 0, False)
    with engine.connect() as conn:
        sources = conn.execute(
            sa.select(_events.c.source, sa.func.count()).group_by(_events.c.source)
        ).all()
    assert dict(sources) == {"events": 1500}


def test_events_go_through_the_rules_and_the_outbox(engine: Engine, standin: Standin) -> None:
    start_feed(engine, standin)
    jobs = create_jobs(standin, 3)
    add_submissions_for(engine, jobs, changed_at=an_hour_ago())
    assert standin.wait_idle(10)
    with reconciler(engine, standin, outbox=counting_outbox()) as one:
        summary = one.run_pass()
    assert set(statuses(engine).values()) == {"succeeded"}
    # created (queued) repeats the stored state; processing and succeeded apply.
    assert summary.event_outcomes() == {
        "applied": 6,
        "duplicate": 3,
        "stale": 0,
        "unmatched": 0,
        "rejected": 0,
        "ignored": 0,
    }
    assert notification_count(engine) == 3
    stored = stored_events(engine)
    assert {event["source"] for event in stored} == {"events"}
    assert all(event["dedupe_key"].startswith("evt:evt_") for event in stored)
    assert feed_row(engine)["cursor"] == stored[-1]["dedupe_key"].removeprefix("evt:")  # type: ignore[index]


class Crash(BaseException):
    """The process dies here: nothing after it runs, no lease is given back."""


def _die(*_args: Any, **_kwargs: Any) -> Any:
    raise Crash


def test_a_crash_before_the_cursor_moves_loses_nothing_and_applies_nothing_twice(
    engine: Engine, standin: Standin, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_feed(engine, standin)
    jobs = create_jobs(standin, 4)
    add_submissions_for(engine, jobs, changed_at=an_hour_ago())
    assert standin.wait_idle(10)
    with monkeypatch.context() as patch:
        patch.setattr(event_cursor, "move_cursor", _die)
        patch.setattr(event_cursor, "release", lambda *_args, **_kwargs: None)
        with reconciler(engine, standin, outbox=counting_outbox()) as dying, pytest.raises(Crash):
            dying.run_pass()
    # The page's changes were committed; the cursor stayed where it was.
    assert set(statuses(engine).values()) == {"succeeded"}
    assert notification_count(engine) == 4
    assert feed_row(engine)["cursor"] is None  # type: ignore[index]

    # The next reconciler takes the run-out lease over and reads the page again.
    later = utcnow() + timedelta(minutes=10)
    with reconciler(
        engine, standin, owner="next", clock=lambda: later, outbox=counting_outbox()
    ) as next_one:
        summary = next_one.run_pass()
    assert (summary.events_read, summary.events_duplicate, summary.events_applied) == (12, 12, 0)
    assert notification_count(engine) == 4
    assert len(stored_events(engine)) == 12
    assert feed_row(engine)["cursor"] is not None  # type: ignore[index]


def test_a_crash_in_the_middle_of_a_page_loses_nothing(
    engine: Engine, standin: Standin, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_feed(engine, standin)
    jobs = create_jobs(standin, 4)
    add_submissions_for(engine, jobs, changed_at=an_hour_ago())
    assert standin.wait_idle(10)
    real = event_list.process_delivery
    calls = 0

    def dies_on_the_fifth(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise Crash
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(event_list, "process_delivery", dies_on_the_fifth)
        patch.setattr(event_cursor, "release", lambda *_args, **_kwargs: None)
        with reconciler(engine, standin) as dying, pytest.raises(Crash):
            dying.run_pass()
    # The page was one transaction: none of it was written, and the cursor did not move.
    assert set(statuses(engine).values()) == {"processing"}
    assert stored_events(engine) == []
    assert feed_row(engine)["cursor"] is None  # type: ignore[index]

    later = utcnow() + timedelta(minutes=10)
    with reconciler(engine, standin, owner="next", clock=lambda: later) as next_one:
        summary = next_one.run_pass()
    assert (summary.events_read, summary.events_applied, summary.checked) == (12, 8, 0)
    assert set(statuses(engine).values()) == {"succeeded"}


def test_a_job_id_collision_rejects_that_event_and_applies_the_rest(
    engine: Engine, standin: Standin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job id another submission took meanwhile fails its event alone, not the page."""
    start_feed(engine, standin)
    jobs = create_jobs(standin, 2)
    add_submissions_for(engine, jobs, changed_at=an_hour_ago())
    assert standin.wait_idle(10)
    real = event_list.process_delivery
    taken = jobs["sub_ev_0"]

    def collides(*args: Any, **kwargs: Any) -> Any:
        if kwargs["state"].job_id == taken and kwargs["state"].provider_status == "succeeded":
            raise sa.exc.IntegrityError("UPDATE submissions", {}, Exception("job_id taken"))
        return real(*args, **kwargs)

    monkeypatch.setattr(event_list, "process_delivery", collides)
    with reconciler(engine, standin, stuck_after=3600.0) as one:
        summary = one.run_pass()
    assert (summary.events_read, summary.events_rejected, summary.events_applied) == (6, 1, 3)
    rejected = [event for event in stored_events(engine) if event["outcome"] == "rejected"]
    assert [(event["job_id"], event["reason"]) for event in rejected] == [
        (taken, "job id belongs to another submission")
    ]
    # The polls left after the list are not due yet (STUCK_AFTER): the list did this alone.
    assert statuses(engine) == {"sub_ev_0": "processing", "sub_ev_1": "succeeded"}


def test_a_webhook_for_an_event_read_from_the_list_is_a_duplicate(
    client: FlaskClient, engine: Engine, standin: Standin
) -> None:
    start_feed(engine, standin)
    jobs = create_jobs(standin, 1, prefix="sub")
    job_id = jobs["sub_0"]
    add_submission(engine, "sub_0", job_id=job_id)
    assert standin.wait_idle(10)
    with reconciler(engine, standin) as one:
        assert one.run_pass().events_applied == 3
    final = next(
        event
        for event in standin._machine.events()
        if event["data"]["id"] == job_id and event["kind"] == "job.succeeded"
    )
    # The stand-in's delivery of that event to the project URL: its envelope, signed.
    body = json.dumps(final, separators=(",", ":")).encode()
    msg_id = "msg_" + final["id"].removeprefix("evt_")
    response = client.post(PROJECT_URL, data=body, headers=signed_headers(body, msg_id=msg_id))
    assert response.status_code == 200
    assert response.get_json()["outcome"] == "duplicate"
    # Its key was taken by the listed event: nothing new was stored.
    assert len(stored_events(engine)) == 3
    # A bare job on the submission's own URL carries no event id: its state is recorded.
    bare = encode(final["data"])
    response = client.post(token_url("sub_0"), data=bare, headers=signed_headers(bare))
    assert response.get_json()["outcome"] == "duplicate"
    stored = stored_events(engine)
    assert [event["source"] for event in stored] == ["events"] * 3 + ["url"]
    assert [event["dedupe_key"] for event in stored].count(f"evt:{final['id']}") == 1


def test_a_listed_event_whose_webhook_came_first_is_a_duplicate(
    client: FlaskClient, engine: Engine, standin: Standin
) -> None:
    start_feed(engine, standin)
    jobs = create_jobs(standin, 1, prefix="sub")
    add_submission(engine, "sub_0", job_id=jobs["sub_0"])
    assert standin.wait_idle(10)
    for event in standin._machine.events():
        body = json.dumps(event, separators=(",", ":")).encode()
        msg_id = "msg_" + event["id"].removeprefix("evt_")
        client.post(PROJECT_URL, data=body, headers=signed_headers(body, msg_id=msg_id))
    with reconciler(engine, standin) as one:
        summary = one.run_pass()
    assert (summary.events_read, summary.events_duplicate) == (3, 3)
    assert {event["source"] for event in stored_events(engine)} == {"endpoint"}


def test_an_event_for_an_unknown_submission_is_kept_and_matched_later(
    engine: Engine, standin: Standin
) -> None:
    start_feed(engine, standin)
    create_jobs(standin, 1, prefix="sub_late")
    assert standin.wait_idle(10)
    with reconciler(engine, standin) as one:
        summary = one.run_pass()
    assert summary.events_unmatched == 3
    assert {event["outcome"] for event in stored_events(engine)} == {"unmatched"}

    add_submission(engine, "sub_late_0")
    with reconciler(engine, standin) as two:
        summary = two.run_pass()
    assert summary.rematched == 3
    assert statuses(engine) == {"sub_late_0": "succeeded"}
    assert len(stored_events(engine)) == 3


def test_events_about_no_job_are_ignored(
    engine: Engine, standin: Standin, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_feed(engine, standin)
    jobs = create_jobs(standin, 1)
    add_submissions_for(engine, jobs, changed_at=an_hour_ago())
    assert standin.wait_idle(10)
    run = {
        "id": "evt_run",
        "object": "event",
        "kind": "run.succeeded",
        "data": {"id": "run_1", "status": "succeeded"},
        "created_at": time.time(),
    }
    standin._machine._events.append(run)
    with reconciler(engine, standin) as one:
        summary = one.run_pass()
    assert (summary.events_read, summary.events_ignored, summary.events_applied) == (4, 1, 2)
    assert "evt:evt_run" not in {event["dedupe_key"] for event in stored_events(engine)}
    assert feed_row(engine)["cursor"] == "evt_run"  # type: ignore[index]


def test_a_first_pass_starts_at_the_newest_event_and_polls(
    engine: Engine, standin: Standin
) -> None:
    jobs = create_jobs(standin, 5)
    add_submissions_for(engine, jobs, changed_at=an_hour_ago())
    assert standin.wait_idle(10)
    newest = standin._machine.events()[-1]["id"]
    with reconciler(engine, standin) as one:
        summary = one.run_pass()
    assert summary.event_cursor == newest
    assert summary.events_read == 0
    assert summary.checked == 5
    requests = standin.request_counts()
    assert requests.pop("GET /events") == 1
    assert sum(requests.values()) == 5


def test_events_since_backfills_a_first_pass(engine: Engine, standin: Standin) -> None:
    jobs = create_jobs(standin, 5)
    add_submissions_for(engine, jobs, changed_at=an_hour_ago())
    assert standin.wait_idle(10)
    with reconciler(engine, standin, events_since=3600.0) as one:
        summary = one.run_pass()
    # One page back in time finds no older event: the list is read from its beginning.
    assert standin.request_counts() == {"GET /events": 2}
    assert (summary.events_read, summary.events_applied, summary.checked) == (15, 10, 0)
    assert set(statuses(engine).values()) == {"succeeded"}


def test_events_since_places_the_cursor_after_older_events(
    engine: Engine, standin: Standin
) -> None:
    old = create_jobs(standin, 2, prefix="sub_old")
    assert standin.wait_idle(10)
    between = utcnow()  # the stand-in stamps every event later than the one before
    new = create_jobs(standin, 2, prefix="sub_new")
    add_submissions_for(engine, {**old, **new}, changed_at=an_hour_ago())
    assert standin.wait_idle(10)
    # The pass looks a second back from a clock a second past ``between``.
    later = between + timedelta(seconds=1)
    with reconciler(engine, standin, events_first_since=1.0, clock=lambda: later) as one:
        summary = one.run_pass()
    assert summary.events_read == 6
    found = statuses(engine)
    assert {found["sub_new_0"], found["sub_new_1"]} == {"succeeded"}
    # The older jobs were polled instead.
    assert summary.checked == 2
    assert set(found.values()) == {"succeeded"}


def test_a_pass_reads_at_most_the_page_budget_and_says_where_it_stopped(
    engine: Engine, standin: Standin
) -> None:
    start_feed(engine, standin)
    jobs = create_jobs(standin, 80)
    add_submissions_for(engine, jobs, changed_at=an_hour_ago())
    assert standin.wait_idle(10)
    with reconciler(engine, standin, event_pages=2) as one:
        first = one.run_pass()
        assert (first.event_pages, first.events_read, first.events_more) == (2, 200, True)
        assert first.checked == 0, "polls wait while the list has more"
        assert first.event_cursor is not None
        assert first.event_cursor in (first.events_note or "")
        second = one.run_pass()
    assert (second.event_pages, second.events_read, second.events_more) == (1, 40, False)
    assert set(statuses(engine).values()) == {"succeeded"}


def test_an_api_without_the_list_is_polled_job_by_job_and_said_once(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="reconcile.passes")
    with running(StandinConfig(step=0.02, event_list=False)) as standin:
        jobs = create_jobs(standin, 10)
        add_submissions_for(engine, jobs, changed_at=an_hour_ago())
        assert standin.wait_idle(10)
        with reconciler(engine, standin) as one:
            first = one.run_pass()
            assert standin.requests_made("GET /events") == 1
            assert standin.requests_made("GET /jobs/") == 10
            more = create_jobs(standin, 2, prefix="sub_more")
            add_submissions_for(engine, more, changed_at=an_hour_ago())
            assert standin.wait_idle(10)
            second = one.run_pass()
            assert standin.request_counts() == {f"GET /jobs/{job}": 1 for job in more.values()}
    assert first.checked == 10
    assert second.checked == 2
    assert first.events_note is not None
    assert first.events_note.startswith("not read: the API has no event list")
    assert set(statuses(engine).values()) == {"succeeded"}
    said = [record for record in caplog.records if "no event list" in record.getMessage()]
    assert len(said) == 1


def test_the_list_turned_off_is_not_asked(engine: Engine, standin: Standin) -> None:
    jobs = create_jobs(standin, 3)
    add_submissions_for(engine, jobs, changed_at=an_hour_ago())
    assert standin.wait_idle(10)
    with reconciler(engine, standin, events=False) as one:
        summary = one.run_pass()
    assert standin.requests_made("GET /events") == 0
    assert summary.checked == 3
    assert summary.events_note == "not read: turned off (RECONCILE_EVENTS=off)"


def test_a_dry_run_reads_no_list(engine: Engine, standin: Standin) -> None:
    with reconciler(engine, standin, dry_run=True) as one:
        summary = one.run_pass()
    assert standin.requests_made("GET /events") == 0
    assert summary.events_note == "not read in a dry run"
    assert feed_row(engine) is None


@pytest.mark.slow
def test_three_reconcilers_at_once_read_each_page_once(database_url: str) -> None:
    """One holds the feed while it reads; the others wait their turn, and no page is read twice."""
    settings = Settings.from_env(
        {"APP_ENV": "test", "SECRET_KEY": SECRET_KEY, "DATABASE_URL": database_url}
    )
    engines = [create_db_engine(settings) for _ in range(3)]
    try:
        with running(StandinConfig(step=0.02)) as standin:
            start_feed(engines[0], standin)
            jobs = create_jobs(standin, 200)
            add_submissions_for(engines[0], jobs, changed_at=an_hour_ago())
            assert standin.wait_idle(30)
            listed = len(standin._machine.events())
            start = threading.Barrier(3)
            summaries: list[Summary] = []
            failures: list[BaseException] = []

            def run(index: int) -> None:
                try:
                    with reconciler(engines[index], standin, owner=f"reconciler-{index}") as one:
                        start.wait()
                        summaries.append(one.run_pass())
                except BaseException as exc:
                    failures.append(exc)

            threads = [threading.Thread(target=run, args=(index,)) for index in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
            requests = standin.request_counts()
        assert failures == []
        assert len(summaries) == 3
        assert sum(summary.events_read for summary in summaries) == listed == 600
        # Only each job's created event repeats a stored state; no event came back twice.
        assert sum(summary.events_duplicate for summary in summaries) == 200
        # One reconciler read the whole list. One that got the lease only after it was
        # given back finds the cursor at the end: it reads the empty tail, nothing more.
        readers = [summary for summary in summaries if summary.events_read]
        assert len(readers) == 1
        assert readers[0].event_pages == 6
        late = [summary for summary in summaries if summary.event_pages and not summary.events_read]
        assert all(summary.event_pages == 1 for summary in late)
        assert requests == {"GET /events": 6 + len(late)}
        assert sum(summary.checked for summary in summaries) == 0
        assert set(statuses(engines[0]).values()) == {"succeeded"}
        assert feed_row(engines[0])["lease_owner"] is None  # type: ignore[index]
    finally:
        for engine in engines:
            engine.dispose()


# --- the command line and the metrics ---------------------------------------------------------


@pytest.fixture
def cli(
    app_config: dict[str, Any], standin: Standin
) -> Iterator[tuple[FlaskCliRunner, Engine, FlaskClient]]:
    """The jobhooks commands, asking the stand-in; with its engine and a web client."""
    app_config["ITTYBIT_API_URL"] = standin.url
    app_config["ITTYBIT_API_KEY"] = DEFAULT_API_KEY
    # The events here are seconds old: judge them at once, not after ten minutes.
    app_config["WEBHOOK_SILENCE_AFTER"] = "0s"
    app = create_app(app_config)
    try:
        yield app.test_cli_runner(), get_engine(app), app.test_client()
    finally:
        get_engine(app).dispose()


def test_the_summary_counts_the_event_list(
    cli: tuple[FlaskCliRunner, Engine, FlaskClient], standin: Standin
) -> None:
    runner, engine, client = cli
    first = runner.invoke(args=["reconcile"])
    assert first.exit_code == 0, first.output
    assert "event list: 1 page(s), 0 event(s); first pass: the list is empty;" in first.stdout
    jobs = create_jobs(standin, 3)
    add_submissions_for(engine, jobs, changed_at=an_hour_ago())
    assert standin.wait_idle(10)

    text = runner.invoke(args=["reconcile", "--older-than", "0s"])
    assert text.exit_code == 0, text.output
    cursor = standin._machine.events()[-1]["id"]
    assert f"event list: 1 page(s), 9 event(s), read up to {cursor}" in text.stdout
    lines = {line.split()[0]: line.split()[1] for line in text.stdout.splitlines()[1:]}
    assert (lines["events_read"], lines["events_applied"], lines["events_duplicate"]) == (
        "9",
        "6",
        "3",
    )
    assert lines["checked"] == "0"
    # No job here has a webhook URL: each listed change (not the creations) was missed.
    assert (
        "webhooks: 6 listed event(s) no webhook brought within 0s (WEBHOOK_SILENCE_AFTER), "
        "0 brought by one; 6 missed in a row since "
    ) in text.stdout

    as_json = json.loads(runner.invoke(args=["reconcile", "--json"]).stdout)
    assert (as_json["event_pages"], as_json["events_read"], as_json["event_cursor"]) == (
        1,
        0,
        cursor,
    )
    samples = scrape(client)
    assert value(samples, "jobhooks_reconcile_event_pages_total") == 3
    assert value(samples, "jobhooks_reconcile_events_read_total") == 9
    assert value(samples, "jobhooks_reconcile_events_total", outcome="applied") == 6
    assert value(samples, "jobhooks_reconcile_events_total", outcome="duplicate") == 3
    assert value(samples, "jobhooks_webhooks_missed_total") == 6


def test_events_since_reads_the_list_again(
    cli: tuple[FlaskCliRunner, Engine, FlaskClient], standin: Standin
) -> None:
    runner, engine, _ = cli
    runner.invoke(args=["reconcile"])
    jobs = create_jobs(standin, 2)
    add_submissions_for(engine, jobs, changed_at=an_hour_ago())
    assert standin.wait_idle(10)
    runner.invoke(args=["reconcile"])
    again = json.loads(runner.invoke(args=["reconcile", "--events-since", "1h", "--json"]).stdout)
    assert (again["events_read"], again["events_duplicate"], again["events_applied"]) == (6, 6, 0)
    refused = runner.invoke(args=["reconcile", "--loop", "--events-since", "1h"])
    assert refused.exit_code == 2
    assert "--events-since is a one-off backfill" in refused.output


def test_the_worker_reads_on_at_once_while_the_list_has_more(
    engine: Engine, standin: Standin
) -> None:
    """A pass stopped by its page budget is followed by the next without the interval."""
    start_feed(engine, standin)
    jobs = create_jobs(standin, 100)
    add_submissions_for(engine, jobs, changed_at=an_hour_ago())
    assert standin.wait_idle(10)
    summaries: list[Summary] = []

    class Counting(Reconciler):
        def run_pass(self) -> Summary:
            summary = super().run_pass()
            summaries.append(summary)
            if not summary.events_more:
                self.stop.set()
            return summary

    with IttybitClient(base_url=standin.url, api_key=DEFAULT_API_KEY) as client:
        worker = Counting(
            engine,
            client,
            PassOptions(stuck_after=0.0, event_pages=1),
            outbox=quiet_outbox(),
            owner="worker",
        )
        started = time.monotonic()
        _run_loop(worker, 3600.0, as_json=False)
    assert time.monotonic() - started < 60, "the worker waited the interval"
    assert [summary.events_more for summary in summaries] == [True, True, False]
    assert sum(summary.events_read for summary in summaries) == 300
    assert [summary.checked for summary in summaries] == [0, 0, 0]
    assert set(statuses(engine).values()) == {"succeeded"}


def test_a_failing_list_ends_the_reading_and_the_polls_go_on(
    engine: Engine, api_server: HTTPServer
) -> None:
    """ittybit's list answers 503 (after retries): the pass says so and polls as before."""
    api_server.expect_request("/events").respond_with_json({"error": "busy"}, status=503)
    api_server.expect_request("/jobs/job_1").respond_with_json(
        {"id": "job_1", "status": "succeeded", "output": {"url": "https://cdn.example.com/1"}}
    )
    add_submissions_for(engine, {"sub_1": "job_1"}, changed_at=an_hour_ago())
    with IttybitClient(base_url=api_server.url_for("").rstrip("/"), api_key="key") as client:
        one = Reconciler(engine, client, PassOptions(stuck_after=0.0), outbox=quiet_outbox())
        summary = one.run_pass()
        assert one.events_off is None, "a busy list is asked for again next pass"
    assert summary.events_note == "stopped: GET /events: HTTP 503: busy"
    assert (summary.event_pages, summary.checked, summary.updated) == (0, 1, 1)
    assert feed_row(engine)["lease_owner"] is None  # type: ignore[index]
    assert statuses(engine) == {"sub_1": "succeeded"}
