"""One "ask ittybit now" for the API, the admin view and ``reconcile --submission``.

Each caller gives the flow (``receiver.flows.polling.ask_ittybit_now``) its own guard: the
web its slot, the command the submission's lease, so the command never polls a job a
running worker has in hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy.engine import Engine

from receiver.flows import polling
from receiver.flows.admin_accounts import create_admin
from receiver.flows.polling import NoRealJob, NoSlotFree, ask_ittybit_now
from receiver.ittybit.client import IttybitClient
from receiver.store.models import Submission
from tests.admin_helpers import post_form, sign_in
from tests.api_helpers import bearer
from tests.helpers import quiet_outbox
from tests.reconcile_helpers import API_KEY, FakeIttybit, Scripted, add_submissions, rows

pytestmark = pytest.mark.usefixtures("ittybit_api")

NOW = datetime.now(UTC)
_submissions = Submission.__table__  # type: ignore[attr-defined]


def lease_to_another(engine: Engine, submission_id: str, *, until: datetime) -> None:
    """Hold ``submission_id``'s lease as a running worker polling it would."""
    with engine.begin() as conn:
        conn.execute(
            sa.update(_submissions)
            .where(_submissions.c.submission_id == submission_id)
            .values(lease_owner="worker:1:abcd", lease_until=until)
        )


def named(runner: FlaskCliRunner, *ids: str) -> Any:
    args = ["reconcile", "--json"]
    for submission_id in ids:
        args += ["--submission", submission_id]
    return runner.invoke(args=args)


def test_the_command_the_api_and_the_admin_view_ask_through_the_one_flow(
    monkeypatch: pytest.MonkeyPatch,
    app: Flask,
    client: FlaskClient,
    runner: FlaskCliRunner,
    engine: Engine,
    fake: FakeIttybit,
) -> None:
    add_submissions(engine, [1, 2, 3], changed_at=NOW)
    for key in (1, 2, 3):
        fake.job(f"job_{key}", "succeeded")
    asked: list[tuple[str, str]] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        asked.append((args[2], kwargs["source"]))
        return ask_ittybit_now(*args, **kwargs)

    monkeypatch.setattr("reconcile.passes.ask_ittybit_now", spy)
    monkeypatch.setattr("receiver.web.ittybit.ask_ittybit_now", spy)

    assert named(runner, "sub_1").exit_code == 0
    headers = bearer(app)
    assert client.post("/api/v1/submissions/sub_2/reconcile", headers=headers).status_code == 200
    create_admin(engine, "oncall@example.com", "correct horse battery staple", now=NOW)
    assert sign_in(client).status_code == 302
    page = "/admin/submissions/sub_3"
    post_form(client, page, "/admin/actions/reconcile", submission_id="sub_3")

    assert asked == [("sub_1", "reconcile"), ("sub_2", "api"), ("sub_3", "admin")]
    assert {row["status"] for row in rows(engine).values()} == {"succeeded"}


def test_the_api_and_the_command_leave_the_same_history(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, engine: Engine, fake: FakeIttybit
) -> None:
    add_submissions(engine, [1, 2], changed_at=NOW, provider_status="queued")
    fake.job("job_1", "processing")
    fake.job("job_2", "processing")
    headers = bearer(app)
    assert client.post("/api/v1/submissions/sub_1/reconcile", headers=headers).status_code == 200
    assert named(runner, "sub_2").exit_code == 0

    def history(submission_id: str) -> list[dict[str, Any]]:
        url = f"/api/v1/submissions/{submission_id}/events"
        entries = client.get(url, headers=headers).get_json()["data"]
        return [
            {k: v for k, v in entry.items() if k not in ("id", "at", "job_id")} for entry in entries
        ]

    api, command = history("sub_1"), history("sub_2")
    assert [entry.pop("source") for entry in api] == ["api"]
    assert [entry.pop("source") for entry in command] == ["reconcile"]
    assert api == command
    assert api[0]["result"] == "updated"
    stored = rows(engine)
    kept = ("status", "provider_status", "poll_attempts", "poll_error", "lease_owner")
    assert [stored["sub_1"][name] for name in kept] == [stored["sub_2"][name] for name in kept]
    assert stored["sub_2"]["lease_owner"] is None  # the command's lease was given back


def test_the_command_skips_a_submission_another_reconciler_has_leased(
    runner: FlaskCliRunner, engine: Engine, fake: FakeIttybit
) -> None:
    add_submissions(engine, [1, 2], changed_at=NOW)
    fake.job("job_1", "succeeded")
    fake.job("job_2", "succeeded")
    lease_to_another(engine, "sub_1", until=datetime.now(UTC) + timedelta(minutes=5))

    result = named(runner, "sub_1", "sub_2")

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["skipped"], summary["updated"], summary["checked"]) == (1, 1, 1)
    assert fake.requests == {"job_2": 1}, "asked ittybit about a job another reconciler holds"
    stored = rows(engine)
    assert (stored["sub_1"]["status"], stored["sub_1"]["lease_owner"]) == (
        "processing",
        "worker:1:abcd",
    )
    # Once the worker's lease runs out (it died), the command asks.
    lease_to_another(engine, "sub_1", until=datetime.now(UTC) - timedelta(seconds=1))
    assert json.loads(named(runner, "sub_1").stdout)["updated"] == 1
    assert rows(engine)["sub_1"]["lease_owner"] is None


def test_a_refused_key_stops_the_command_before_the_next_submission(
    runner: FlaskCliRunner, engine: Engine, fake: FakeIttybit
) -> None:
    add_submissions(engine, [1, 2], changed_at=NOW)
    fake.script("job_1", Scripted(401, {"message": "bad key"}))
    fake.job("job_2", "succeeded")
    result = runner.invoke(args=["reconcile", "--submission", "sub_1", "--submission", "sub_2"])
    assert result.exit_code == 1
    assert "aborted:" in result.stderr
    assert "job_2" not in fake.requests
    assert all(row["lease_owner"] is None for row in rows(engine).values())


@contextmanager
def entered(log: list[str], answer: bool) -> Iterator[bool]:
    log.append("entered")
    yield answer


@pytest.fixture
def api(fake: FakeIttybit) -> Iterator[IttybitClient]:
    with IttybitClient(base_url=fake.url, api_key=API_KEY, timeout=2.0) as client:
        yield client


def ask(engine: Engine, api: IttybitClient, submission_id: str, guard: Any) -> Any:
    return ask_ittybit_now(
        engine,
        api,
        submission_id,
        guard=guard,
        source="reconcile",
        now=datetime.now(UTC),
        give_up_after=86400.0,
        outbox=quiet_outbox(),
    )


def test_the_guard_is_entered_only_for_a_real_job_and_can_refuse(
    engine: Engine, api: IttybitClient, fake: FakeIttybit
) -> None:
    add_submissions(engine, [1], changed_at=NOW)
    add_submissions(engine, ["nojob"], changed_at=NOW, status="pending", with_job=False)
    add_submissions(engine, ["test"], changed_at=NOW, is_test=True)
    fake.job("job_1", "succeeded")
    log: list[str] = []
    with pytest.raises(LookupError):
        ask(engine, api, "sub_404", entered(log, True))
    with pytest.raises(NoRealJob):
        ask(engine, api, "sub_test", entered(log, True))
    assert ask(engine, api, "sub_nojob", entered(log, True)) is None
    assert log == []
    with pytest.raises(NoSlotFree):
        ask(engine, api, "sub_1", entered(log, False))
    assert (log, fake.requests) == (["entered"], {})
    answer = ask(engine, api, "sub_1", entered(log, True))
    assert (answer.result, answer.job.job_id) == (polling.JobResult.UPDATED, "job_1")
    assert fake.requests == {"job_1": 1}


def test_the_admin_view_does_not_ask_about_a_test_submission(
    client: FlaskClient, engine: Engine, fake: FakeIttybit
) -> None:
    add_submissions(engine, ["test"], changed_at=NOW, is_test=True)
    create_admin(engine, "oncall@example.com", "correct horse battery staple", now=NOW)
    assert sign_in(client).status_code == 302
    page = "/admin/submissions/sub_test"
    assert 'id="reconcile-now"' not in client.get(page).text
    response = post_form(client, page, "/admin/actions/reconcile", submission_id="sub_test")
    assert "sub_test is a test submission" in client.get(response.headers["Location"]).text
    assert fake.requests == {}
    assert rows(engine)["sub_test"]["status"] == "processing"
