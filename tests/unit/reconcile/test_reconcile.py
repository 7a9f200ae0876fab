"""Reconcile passes against a real local stand-in for the ittybit API, time passed in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient, FlaskCliRunner
from freezegun import freeze_time
from pytest_httpserver import HTTPServer
from sqlalchemy.engine import Engine

from receiver.flows.polling import human_duration, poll_delay
from receiver.ittybit.client import IttybitClient, RetryPolicy, set_testing
from reconcile.passes import PassOptions, Reconciler
from reconcile.summary import Summary
from tests.helpers import encode, job_payload, quiet_outbox, signed_headers
from tests.reconcile_helpers import API_KEY, FakeIttybit, Scripted, add_submissions, rows

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
HOUR_AGO = NOW - timedelta(hours=1)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


pytestmark = pytest.mark.usefixtures("ittybit_api")


@pytest.fixture
def api(fake: FakeIttybit) -> Iterator[IttybitClient]:
    with IttybitClient(
        base_url=fake.url,
        api_key=API_KEY,
        timeout=2.0,
        max_connections=4,
        retry=RetryPolicy(attempts=2),
    ) as client:
        yield client


def reconciler(
    engine: Engine, client: IttybitClient, clock: Clock | None = None, **options: Any
) -> Reconciler:
    values: dict[str, Any] = {
        "stuck_after": 900.0,
        "give_up_after": 86400.0,
        "batch": 10,
        "concurrency": 4,
        "lease_seconds": 300.0,
    }
    values.update(options)
    return Reconciler(
        engine, client, PassOptions(**values), outbox=quiet_outbox(), clock=clock or Clock()
    )


def counts(summary: Summary) -> dict[str, int]:
    names = ("checked", "updated", "unchanged", "failed", "expired", "errors", "deferred")
    return {name: getattr(summary, name) for name in names if getattr(summary, name)}


def test_applies_succeeded_failed_and_still_running(
    engine: Engine, api: IttybitClient, fake: FakeIttybit
) -> None:
    add_submissions(engine, [1, 2, 3], changed_at=HOUR_AGO, provider_status="processing")
    fake.job("job_1", "succeeded", updated_at="2026-11-28T11:50:00Z")
    fake.job("job_2", "failed")
    fake.job("job_3", "processing")

    summary = reconciler(engine, api).run_pass()

    assert counts(summary) == {"checked": 3, "updated": 1, "failed": 1, "unchanged": 1}
    assert summary.ok
    stored = rows(engine)
    assert stored["sub_1"]["status"] == "succeeded"
    assert stored["sub_1"]["output_url"] == "https://cdn.example.com/job_1.mp4"
    assert stored["sub_1"]["provider_updated_at"] == datetime(2026, 11, 28, 11, 50, tzinfo=UTC)
    assert stored["sub_1"]["updated_at"] == NOW
    assert stored["sub_2"]["status"] == "failed"
    assert stored["sub_2"]["error"] == "input could not be decoded"
    assert stored["sub_3"]["status"] == "processing"
    assert stored["sub_3"]["updated_at"] == HOUR_AGO  # a poll is no change
    assert stored["sub_3"]["next_poll_at"] == NOW + timedelta(minutes=1)
    assert stored["sub_1"]["next_poll_at"] is None
    for row in stored.values():
        assert row["poll_attempts"] == 1
        assert row["last_polled_at"] == NOW
        assert (row["lease_owner"], row["lease_until"]) == (None, None)
    assert fake.requests == {"job_1": 1, "job_2": 1, "job_3": 1}


def test_provider_progress_counts_as_updated(
    engine: Engine, api: IttybitClient, fake: FakeIttybit
) -> None:
    add_submissions(engine, [1], changed_at=HOUR_AGO, provider_status="queued")
    fake.job("job_1", "processing")
    summary = reconciler(engine, api).run_pass()
    assert counts(summary) == {"checked": 1, "updated": 1}
    assert rows(engine)["sub_1"]["provider_status"] == "processing"


def test_only_stuck_due_unleased_submissions_are_polled(
    engine: Engine, api: IttybitClient, fake: FakeIttybit
) -> None:
    add_submissions(engine, ["stuck"], changed_at=HOUR_AGO)
    add_submissions(engine, ["fresh"], changed_at=NOW - timedelta(minutes=5))
    add_submissions(engine, ["done"], changed_at=HOUR_AGO, status="succeeded")
    add_submissions(engine, ["expired"], changed_at=HOUR_AGO, status="expired")
    add_submissions(engine, ["later"], changed_at=HOUR_AGO, next_poll_at=NOW + timedelta(1))
    add_submissions(
        engine,
        ["leased"],
        changed_at=HOUR_AGO,
        lease_owner="elsewhere",
        lease_until=NOW + timedelta(minutes=1),
    )
    add_submissions(
        engine,
        ["lapsed"],
        changed_at=HOUR_AGO,
        lease_owner="crashed",
        lease_until=NOW - timedelta(seconds=1),
    )
    add_submissions(engine, ["nojob"], changed_at=HOUR_AGO, status="pending", with_job=False)
    for key in ("stuck", "fresh", "done", "expired", "later", "leased", "lapsed"):
        fake.job(f"job_{key}", "processing")

    summary = reconciler(engine, api).run_pass()

    assert set(fake.requests) == {"job_stuck", "job_lapsed"}
    assert summary.checked == 2
    assert (summary.unsubmitted, summary.unsubmitted_sample) == (1, ["sub_nojob"])
    assert rows(engine)["sub_leased"]["lease_owner"] == "elsewhere"
    assert rows(engine)["sub_lapsed"]["lease_owner"] is None


def test_unsubmitted_counts_jobless_pending_ones_unchanged_for_stuck_after(
    engine: Engine, api: IttybitClient, fake: FakeIttybit
) -> None:
    """What the README says of ``unsubmitted`` (step 3 of a pass)."""
    pending = {"status": "pending", "with_job": False}
    add_submissions(engine, range(6), changed_at=HOUR_AGO, **pending)
    add_submissions(engine, ["fresh"], changed_at=NOW - timedelta(minutes=5), **pending)
    add_submissions(
        engine, ["refused"], changed_at=HOUR_AGO, error="submit failed: not a video", **pending
    )
    # Not counted: its job is asked for (the worker's to make), a final one, a test one.
    add_submissions(engine, ["asked"], changed_at=HOUR_AGO, job_requested_at=HOUR_AGO, **pending)
    add_submissions(engine, ["gone"], changed_at=HOUR_AGO, status="failed", with_job=False)
    add_submissions(engine, ["test_x"], changed_at=HOUR_AGO, is_test=True, **pending)

    summary = reconciler(engine, api).run_pass()
    assert summary.unsubmitted == 7  # six, and the refused one; not the fresh one yet
    assert summary.unsubmitted_sample == [f"sub_{n}" for n in range(5)]
    assert reconciler(engine, api, stuck_after=60.0).run_pass().unsubmitted == 8
    assert rows(engine)["sub_0"]["job_id"] is None  # only counted: no job is made
    assert fake.requests == {}


def test_older_than_overrides_stuck_after(
    engine: Engine, api: IttybitClient, fake: FakeIttybit
) -> None:
    add_submissions(engine, [1], changed_at=NOW - timedelta(minutes=5))
    fake.job("job_1", "succeeded")
    assert reconciler(engine, api, stuck_after=600.0).run_pass().checked == 0
    assert reconciler(engine, api, stuck_after=60.0).run_pass().checked == 1


def test_backoff_schedule(engine: Engine, api: IttybitClient, fake: FakeIttybit) -> None:
    add_submissions(engine, [1], changed_at=HOUR_AGO, provider_status="processing")
    fake.job("job_1", "processing")
    clock = Clock()
    run = reconciler(engine, api, clock)
    for attempt, minutes in enumerate([1, 2, 4, 8, 16, 32, 60, 60], start=1):
        assert run.run_pass().checked == 1
        row = rows(engine)["sub_1"]
        assert row["poll_attempts"] == attempt
        assert row["next_poll_at"] == clock.now + timedelta(minutes=minutes)
        clock.advance(minutes=minutes, seconds=-1)
        assert run.run_pass().checked == 0, "polled before its next poll time"
        clock.advance(seconds=1)
    assert fake.requests["job_1"] == 8


def test_poll_delay_doubles_to_a_cap() -> None:
    assert [poll_delay(n) for n in range(1, 9)] == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert poll_delay(500) == 3600


def test_gives_up_after_give_up_after(
    engine: Engine, api: IttybitClient, fake: FakeIttybit
) -> None:
    long_ago = NOW - timedelta(hours=25)
    add_submissions(engine, ["old"], changed_at=long_ago, provider_status="processing")
    add_submissions(engine, ["done"], changed_at=long_ago)
    add_submissions(engine, ["flaky"], changed_at=long_ago)
    # Created long ago, but only sent to ittybit an hour ago.
    add_submissions(engine, ["resent"], changed_at=long_ago, submitted_at=HOUR_AGO)
    fake.job("job_old", "processing")
    fake.job("job_done", "succeeded")
    fake.script("job_flaky", Scripted(503), Scripted(503))
    fake.job("job_resent", "processing")

    summary = reconciler(engine, api).run_pass()

    assert counts(summary) == {"checked": 4, "expired": 1, "updated": 2, "errors": 1}
    stored = rows(engine)
    assert stored["sub_old"]["status"] == "expired"
    assert stored["sub_old"]["error"] == (
        "no final state from ittybit after 1d (last ittybit status: processing)"
    )
    assert stored["sub_old"]["next_poll_at"] is None
    assert stored["sub_old"]["updated_at"] == NOW
    assert stored["sub_done"]["status"] == "succeeded"
    # Not knowing is no reason to give up: an outage must not expire every old job.
    assert stored["sub_flaky"]["status"] == "processing"
    assert stored["sub_resent"]["status"] == "processing"
    # Expired is final for the reconciler: it is not polled again.
    fake.requests.clear()
    later = Clock(NOW + timedelta(days=2))
    reconciler(engine, api, later).run_pass()
    assert "job_old" not in fake.requests


def test_human_duration() -> None:
    assert [human_duration(s) for s in (86400, 7200, 900, 90, 1.5)] == [
        "1d",
        "2h",
        "15m",
        "90s",
        "1.5s",
    ]


def test_job_not_found_marks_failed(engine: Engine, api: IttybitClient, fake: FakeIttybit) -> None:
    add_submissions(engine, ["gone"], changed_at=HOUR_AGO)
    summary = reconciler(engine, api).run_pass()
    assert counts(summary) == {"checked": 1, "failed": 1}
    row = rows(engine)["sub_gone"]
    assert (row["status"], row["error"], row["provider_status"]) == (
        "failed",
        "job not found",
        "not_found",
    )
    assert fake.requests == {"job_gone": 1}


def test_short_retry_after_is_waited_out(engine: Engine, fake: FakeIttybit) -> None:
    add_submissions(engine, [1], changed_at=HOUR_AGO)
    fake.job("job_1", "succeeded")
    fake.script("job_1", Scripted(429, headers={"Retry-After": "3"}))
    waits: list[float] = []
    set_testing(False)  # the waits are recorded, not slept
    with IttybitClient(base_url=fake.url, api_key=API_KEY, sleep=waits.append) as client:
        summary = reconciler(engine, client).run_pass()
    assert counts(summary) == {"checked": 1, "updated": 1}
    assert len(waits) == 1
    assert 2.9 <= waits[0] <= 3.0
    assert fake.requests["job_1"] == 2


def test_long_retry_after_defers_every_job_until_then(
    engine: Engine, fake: FakeIttybit, api: IttybitClient
) -> None:
    add_submissions(engine, [1, 2, 3], changed_at=HOUR_AGO)
    for key in (1, 2, 3):
        fake.job(f"job_{key}", "succeeded")
    fake.script("job_1", Scripted(429, headers={"Retry-After": "900"}))

    summary = reconciler(engine, api, concurrency=1).run_pass()

    assert counts(summary) == {"checked": 3, "deferred": 3}
    assert summary.ok, "being rate limited is not an error"
    assert fake.requests == {"job_1": 1}, "jobs after the 429 were not even asked for"
    for row in rows(engine).values():
        assert row["status"] == "processing"
        assert row["next_poll_at"] >= NOW + timedelta(seconds=890)
        assert "rate limited" in row["poll_error"] or "HTTP 429" in row["poll_error"]


@pytest.mark.slow
def test_a_timeout_on_one_job_does_not_stop_the_others(engine: Engine, fake: FakeIttybit) -> None:
    add_submissions(engine, range(1, 7), changed_at=HOUR_AGO)
    for key in range(1, 7):
        fake.job(f"job_{key}", "succeeded")
    fake.hang.add("job_3")
    with IttybitClient(
        base_url=fake.url, api_key=API_KEY, timeout=0.8, retry=RetryPolicy(attempts=2)
    ) as client:
        summary = reconciler(engine, client, concurrency=2).run_pass()
    assert counts(summary) == {"checked": 6, "updated": 5, "errors": 1}
    assert not summary.ok
    assert summary.problems == [
        {
            "submission_id": "sub_3",
            "job_id": "job_3",
            "result": "error",
            "detail": "GET /jobs/job_3: timed out",
        }
    ]
    stored = rows(engine)
    assert stored["sub_3"]["status"] == "processing"
    assert stored["sub_3"]["poll_error"] == "GET /jobs/job_3: timed out"
    assert stored["sub_3"]["next_poll_at"] == NOW + timedelta(minutes=1)
    assert stored["sub_3"]["lease_owner"] is None
    assert all(stored[f"sub_{key}"]["status"] == "succeeded" for key in (1, 2, 4, 5, 6))


def test_metadata_of_another_owner_is_not_applied(
    engine: Engine, api: IttybitClient, fake: FakeIttybit
) -> None:
    add_submissions(engine, [1], changed_at=HOUR_AGO)
    fake.job("job_1", "succeeded", metadata={"submission_id": "sub_1", "user_id": "mallory"})
    summary = reconciler(engine, api).run_pass()
    assert counts(summary) == {"checked": 1, "errors": 1}
    row = rows(engine)["sub_1"]
    assert row["status"] == "processing"
    assert row["poll_error"] == "metadata user_id does not match the submission's owner"


def test_an_auth_error_stops_the_pass_and_gives_back_the_leases(
    engine: Engine, api: IttybitClient, fake: FakeIttybit
) -> None:
    add_submissions(engine, range(1, 31), changed_at=HOUR_AGO)
    for key in range(1, 31):
        fake.script(f"job_{key}", Scripted(401, {"message": "bad key"}))
    summary = reconciler(engine, api, concurrency=2, batch=10).run_pass()
    assert summary.aborted is not None
    assert "refused the API key" in summary.aborted
    assert not summary.ok
    assert sum(fake.requests.values()) <= 10, "kept asking with a refused key"
    stored = rows(engine)
    assert all(row["lease_owner"] is None for row in stored.values())
    assert all(row["poll_attempts"] == 0 for row in stored.values())


def test_dry_run_writes_nothing(engine: Engine, api: IttybitClient, fake: FakeIttybit) -> None:
    add_submissions(engine, [1, 2, 3], changed_at=HOUR_AGO - timedelta(days=1))
    fake.job("job_1", "succeeded")
    fake.job("job_2", "failed")
    fake.job("job_3", "processing")
    before = rows(engine)

    summary = reconciler(engine, api, dry_run=True).run_pass()

    assert counts(summary) == {"checked": 3, "updated": 1, "failed": 1, "expired": 1}
    assert summary.dry_run
    assert rows(engine) == before
    assert fake.requests == {"job_1": 1, "job_2": 1, "job_3": 1}


def test_limit_caps_the_pass(engine: Engine, api: IttybitClient, fake: FakeIttybit) -> None:
    add_submissions(engine, range(1, 26), changed_at=HOUR_AGO)
    for key in range(1, 26):
        fake.job(f"job_{key}", "succeeded")
    assert reconciler(engine, api, limit=12, batch=5).run_pass().checked == 12
    assert sum(fake.requests.values()) == 12
    assert reconciler(engine, api, batch=5).run_pass().checked == 13


def test_named_submissions_are_polled_stuck_or_not(
    engine: Engine, api: IttybitClient, fake: FakeIttybit
) -> None:
    add_submissions(engine, ["fresh"], changed_at=NOW)
    add_submissions(engine, ["other"], changed_at=HOUR_AGO)
    add_submissions(engine, ["nojob"], changed_at=NOW, status="pending", with_job=False)
    fake.job("job_fresh", "succeeded")
    fake.job("job_other", "succeeded")
    summary = reconciler(
        engine, api, submission_ids=("sub_fresh", "sub_nojob", "sub_unknown")
    ).run_pass()
    assert fake.requests == {"job_fresh": 1}
    assert (summary.checked, summary.updated, summary.skipped, summary.errors) == (1, 1, 1, 1)
    assert summary.problems[0]["detail"] == "no such submission"
    assert rows(engine)["sub_other"]["status"] == "processing"


def test_batches_keep_the_leased_rows_bounded(
    engine: Engine, api: IttybitClient, fake: FakeIttybit
) -> None:
    """Rows are leased a batch at a time as the pool drains, never all at once."""
    from sqlalchemy import func, select

    from receiver.store.models import Submission

    add_submissions(engine, range(1, 61), changed_at=HOUR_AGO)
    for key in range(1, 61):
        fake.job(f"job_{key}", "succeeded")
    leased: list[int] = []
    table = Submission.__table__  # type: ignore[attr-defined]
    query = select(func.count()).where(table.c.lease_owner.is_not(None))

    def count_leases(_key: str) -> None:
        with engine.connect() as conn:
            leased.append(conn.execute(query).scalar_one())

    fake.on_get = count_leases
    summary = reconciler(engine, api, batch=10, concurrency=3).run_pass()
    assert summary.checked == 60
    assert max(leased) <= 10 + 3
    assert all(row["status"] == "succeeded" for row in rows(engine).values())


def test_a_late_webhook_after_reconcile_never_regresses(
    engine: Engine, api: IttybitClient, fake: FakeIttybit, client: FlaskClient
) -> None:
    add_submissions(engine, [1], changed_at=HOUR_AGO)
    fake.job(
        "job_1",
        "succeeded",
        updated_at="2026-11-28T11:30:00Z",
        metadata={"submission_id": "sub_1", "user_id": "user_1"},
    )
    reconciler(engine, api).run_pass()
    after_reconcile = rows(engine)["sub_1"]
    assert after_reconcile["status"] == "succeeded"

    late = [
        (job_payload("job_1", "succeeded", updated_at="2026-11-28T11:30:00Z"), "duplicate"),
        (job_payload("job_1", "processing", updated_at="2026-11-28T11:10:00Z"), "stale"),
        (job_payload("job_1", "processing", updated_at="2026-11-28T11:45:00Z"), "stale"),
        (job_payload("job_1", "failed", updated_at="2026-11-28T11:20:00Z"), "stale"),
    ]
    for number, (payload, outcome) in enumerate(late):
        body = encode(payload)
        response = client.post(
            "/webhooks/ittybit", data=body, headers=signed_headers(body, msg_id=f"msg_{number}")
        )
        assert response.status_code == 200, response.json
        assert response.json is not None
        assert response.json["outcome"] == outcome, payload
    assert rows(engine)["sub_1"] == after_reconcile


def test_a_final_webhook_replaces_expired(
    engine: Engine, api: IttybitClient, fake: FakeIttybit, client: FlaskClient
) -> None:
    add_submissions(engine, [1], changed_at=NOW - timedelta(days=2))
    fake.job("job_1", "processing")
    reconciler(engine, api).run_pass()
    assert rows(engine)["sub_1"]["status"] == "expired"
    body = encode(job_payload("job_1", "succeeded"))
    response = client.post("/webhooks/ittybit", data=body, headers=signed_headers(body))
    assert response.json == {"outcome": "applied", "submission_id": "sub_1", "status": "succeeded"}
    row = rows(engine)["sub_1"]
    assert (row["status"], row["error"]) == ("succeeded", None)


# The command line: options, output, exit codes.


def test_cli_pass_prints_a_summary_table(
    engine: Engine, runner: FlaskCliRunner, fake: FakeIttybit
) -> None:
    add_submissions(engine, [1, 2], changed_at=datetime.now(UTC) - timedelta(hours=1))
    fake.job("job_1", "succeeded")
    fake.job("job_2", "processing")
    result = runner.invoke(args=["reconcile"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[1:]}
    assert lines["checked"] == "2"
    assert lines["updated"] == "2"
    assert lines["errors"] == "0"
    assert result.stdout.startswith("reconcile pass finished in ")


def test_cli_pass_that_checked_nothing_says_what_is_not_due_and_how_to_include_it(
    engine: Engine, runner: FlaskCliRunner, fake: FakeIttybit
) -> None:
    recent = datetime.now(UTC) - timedelta(minutes=2)
    add_submissions(engine, [1, 2], changed_at=recent)
    add_submissions(
        engine,
        [3],
        changed_at=recent - timedelta(hours=1),
        next_poll_at=datetime.now(UTC) + timedelta(minutes=5),
    )
    result = runner.invoke(args=["reconcile"])
    assert result.exit_code == 0, result.output
    assert fake.requests == {}
    assert (
        "nothing was due: 2 running job(s) changed within STUCK_AFTER (15m) and are not due "
        "yet: include them with --older-than 0s, or name one with --submission ID; 1 job(s) "
        "wait for their next poll (backing off): --submission ID polls one now"
    ) in " ".join(result.stdout.split())
    as_json = json.loads(runner.invoke(args=["reconcile", "--json"]).stdout)
    assert (as_json["checked"], as_json["not_due"], as_json["backing_off"]) == (0, 2, 1)


def test_cli_json_summary_and_exit_code_1_on_errors(
    engine: Engine, runner: FlaskCliRunner, fake: FakeIttybit, app_config: dict[str, Any]
) -> None:
    add_submissions(engine, [1, 2], changed_at=datetime.now(UTC) - timedelta(hours=1))
    fake.job("job_1", "succeeded")
    fake.script("job_2", *[Scripted(500)] * 3)
    result = runner.invoke(args=["reconcile", "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert {key: summary[key] for key in ("checked", "updated", "errors", "dry_run")} == {
        "checked": 2,
        "updated": 1,
        "errors": 1,
        "dry_run": False,
    }
    assert summary["problems"][0]["submission_id"] == "sub_2"
    assert "HTTP 500" in summary["problems"][0]["detail"]


@pytest.fixture
def short_timeout(app_config: dict[str, Any]) -> None:
    app_config["ITTYBIT_TIMEOUT"] = "800ms"


@pytest.mark.slow
def test_cli_timeout_on_one_job(
    short_timeout: None, fake: FakeIttybit, runner: FlaskCliRunner, engine: Engine
) -> None:
    add_submissions(engine, [1, 2, 3], changed_at=datetime.now(UTC) - timedelta(hours=1))
    for key in (1, 2, 3):
        fake.job(f"job_{key}", "succeeded")
    fake.hang.add("job_2")
    result = runner.invoke(args=["reconcile", "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert (summary["updated"], summary["errors"]) == (2, 1)


@pytest.mark.parametrize(
    "args",
    [
        ["--older-than", "soon"],
        ["--interval", "0s", "--loop"],
        ["--limit", "0"],
        ["--loop", "--submission", "sub_1"],
        ["--frobnicate"],
    ],
)
def test_cli_bad_arguments_exit_2(
    runner: FlaskCliRunner, fake: FakeIttybit, args: list[str]
) -> None:
    result = runner.invoke(args=["reconcile", *args])
    assert result.exit_code == 2, result.output
    assert fake.requests == {}


def test_cli_submission_option(engine: Engine, runner: FlaskCliRunner, fake: FakeIttybit) -> None:
    add_submissions(engine, [1, 2], changed_at=datetime.now(UTC))
    fake.job("job_1", "succeeded")
    result = runner.invoke(args=["reconcile", "--submission", "sub_1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["updated"] == 1
    assert fake.requests == {"job_1": 1}
    missing = runner.invoke(args=["reconcile", "--submission", "sub_404"])
    assert missing.exit_code == 1
    assert "no such submission" in missing.stderr


def test_cli_dry_run_with_older_than_writes_nothing(
    engine: Engine, runner: FlaskCliRunner, fake: FakeIttybit
) -> None:
    add_submissions(engine, [1], changed_at=datetime.now(UTC) - timedelta(minutes=2))
    fake.job("job_1", "succeeded")
    before = rows(engine)
    result = runner.invoke(args=["reconcile", "--dry-run", "--older-than", "1m"])
    assert result.exit_code == 0, result.output
    assert "dry run (nothing written)" in result.stdout
    assert rows(engine) == before
    assert fake.requests == {"job_1": 1}


@pytest.mark.slow
def test_a_stuck_submission_reaches_its_final_state_over_time(
    runner: FlaskCliRunner, api_server: HTTPServer, fake: FakeIttybit, engine: Engine
) -> None:
    """Submit, lose every webhook, and let reconcile runs bring it home (frozen time)."""
    api_server.expect_request("/jobs", method="POST").respond_with_json(
        {"id": "job_1", "object": "job", "status": "queued"}, status=201
    )
    fake.job("job_1", "processing")
    with freeze_time("2026-11-28 12:00:00") as frozen:
        submitted = runner.invoke(
            args=["submit", "--input", "https://example.com/a.mp4", "--user-id", "user_1"]
        )
        assert submitted.exit_code == 0, submitted.output
        submission_id = json.loads(submitted.stdout)["submission_id"]

        def reconcile() -> dict[str, Any]:
            result = runner.invoke(args=["reconcile", "--json"])
            assert result.exit_code == 0, result.output
            summary: dict[str, Any] = json.loads(result.stdout)
            return summary

        frozen.tick(timedelta(minutes=10))
        assert reconcile()["checked"] == 0  # not stuck yet
        frozen.tick(timedelta(minutes=6))
        assert reconcile()["updated"] == 1  # queued -> processing
        frozen.tick(timedelta(seconds=30))
        assert reconcile()["checked"] == 0  # backing off
        frozen.tick(timedelta(minutes=16))  # the job is stuck again, and due
        assert reconcile()["unchanged"] == 1
        fake.job("job_1", "succeeded")
        frozen.tick(timedelta(minutes=2))
        assert reconcile()["updated"] == 1
        frozen.tick(timedelta(hours=1))
        assert reconcile()["checked"] == 0
    row = rows(engine)[submission_id]
    assert (row["status"], row["output_url"]) == ("succeeded", "https://cdn.example.com/job_1.mp4")
    assert fake.requests["job_1"] == 3
