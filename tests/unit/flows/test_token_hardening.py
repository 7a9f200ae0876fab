"""Issue 19's hardening of the per-submission URL token and what a delivery may do."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from flask.testing import FlaskClient, FlaskCliRunner
from freezegun import freeze_time
from itsdangerous import URLSafeSerializer, URLSafeTimedSerializer
from sqlalchemy.engine import Engine

from config.settings import Settings
from receiver import create_app
from receiver.core.jobstate import clamp_future, normalise
from receiver.core.signing import (
    TOKEN_SALT,
    TokenClaims,
    VerificationError,
    verify_webhook_token,
    webhook_token,
)
from receiver.flows.apply import apply_job_state, find_submission
from receiver.flows.outbox import Outbox
from receiver.flows.records import submission_json
from receiver.observe.metrics import get_metrics
from receiver.store.engines import create_db_engine, get_engine
from receiver.store.migrate import alembic_config, head_revision, upgrade
from receiver.store.models import Submission, WebhookEvent, utcnow
from tests.api_helpers import bearer as api_bearer
from tests.conftest import create_test_database, drop_test_database, postgres_url
from tests.helpers import (
    SECRET_KEY,
    add_submission,
    encode,
    job_payload,
    signed_headers,
    stored_events,
    stored_submission,
    token_url,
)
from tests.notify_helpers import default_specs_for


@pytest.fixture
def token_only(app_config: dict[str, Any]) -> None:
    """Deliveries on signed URLs checked by the URL token alone (no webhook secret)."""
    app_config.pop("ITTYBIT_WEBHOOK_SECRET")


def post_json(client: FlaskClient, url: str, payload: Any) -> Any:
    return client.post(url, data=encode(payload), headers={"Content-Type": "application/json"})


# --- deliveries that claim the same job -------------------------------------------------------


@pytest.mark.usefixtures("token_only")
def test_same_job_on_another_submissions_url_is_refused_and_recorded(
    client: FlaskClient, engine: Engine
) -> None:
    add_submission(engine, "sub_1")
    add_submission(engine, "sub_9182")
    payload = job_payload(submission_id=None, user_id=None, updated_at=1714564800)

    first = post_json(client, token_url("sub_1"), payload)
    assert first.status_code == 200
    assert first.get_json()["outcome"] == "applied"

    second = post_json(client, token_url("sub_9182"), payload)
    assert second.status_code == 403, second.get_json()
    assert second.get_json() == {
        "error": "rejected",
        "message": "job id belongs to another submission",
    }
    rows = stored_events(engine)
    assert [(row["submission_id"], row["outcome"], row["reason"]) for row in rows] == [
        ("sub_1", "applied", None),
        ("sub_9182", "rejected", "job id belongs to another submission"),
    ]
    assert rows[0]["dedupe_key"] != rows[1]["dedupe_key"]
    assert stored_submission(engine, "sub_9182")["status"] == "pending"
    assert stored_submission(engine, "sub_9182")["job_id"] is None
    assert stored_submission(engine, "sub_1")["status"] == "succeeded"

    # A retry of each is answered as before.
    assert post_json(client, token_url("sub_1"), payload).get_json()["outcome"] == "duplicate"
    assert post_json(client, token_url("sub_9182"), payload).status_code == 403
    assert stored_submission(engine, "sub_9182")["status"] == "pending"


# --- submissions import names what it skips ---------------------------------------------------


def import_file(tmp_path: Path, records: list[dict[str, Any]]) -> str:
    path = tmp_path / "subs.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return str(path)


def row(submission_id: str, job_id: str | None = None) -> dict[str, Any]:
    record = {
        "submission_id": submission_id,
        "user_id": "user_1",
        "input_url": f"https://uploads.example.com/{submission_id}.mp4",
    }
    if job_id is not None:
        record["job_id"] = job_id
    return record


def submission_ids(engine: Engine) -> list[str]:
    table = Submission.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return list(
            conn.execute(sa.select(table.c.submission_id).order_by("submission_id")).scalars()
        )


def test_import_names_every_skipped_row_and_why(
    runner: FlaskCliRunner, engine: Engine, tmp_path: Path
) -> None:
    add_submission(engine, "sub_1", job_id="job_1")
    path = import_file(
        tmp_path,
        [
            row("sub_2"),
            row("sub_1"),  # exists
            row("sub_3", "job_1"),  # job held by sub_1 in the database
            row("sub_4", "job_4"),
            row("sub_5", "job_4"),  # job taken by line 4 of this file
        ],
    )
    result = runner.invoke(args=["submissions", "import", path])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"read": 5, "inserted": 2, "skipped": 3}
    assert result.stderr.splitlines() == [
        "line 2: sub_1 skipped: submission_id exists",
        "line 3: sub_3 skipped: job id belongs to sub_1 (the database)",
        "line 5: sub_5 skipped: job id belongs to sub_4 (this file)",
    ]
    assert submission_ids(engine) == ["sub_1", "sub_2", "sub_4"]


def test_strict_import_refuses_the_whole_file_on_any_skip(
    runner: FlaskCliRunner, engine: Engine, tmp_path: Path
) -> None:
    add_submission(engine, "sub_1", job_id="job_1")
    path = import_file(tmp_path, [row("sub_2"), row("sub_3", "job_1"), row("sub_4")])
    result = runner.invoke(args=["submissions", "import", "--strict", path])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "line 2: sub_3 skipped: job id belongs to sub_1 (the database)",
        "Error: 1 row(s) would be skipped (--strict); nothing was imported",
    ]
    assert submission_ids(engine) == ["sub_1"]

    clean = import_file(tmp_path, [row("sub_2"), row("sub_4")])
    result = runner.invoke(args=["submissions", "import", "--strict", clean])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"read": 2, "inserted": 2, "skipped": 0}
    assert result.stderr == ""


# --- the signed webhook URL stays out of API objects and notifications -------------------------


def test_api_objects_and_notifications_carry_no_webhook_url(
    app: Flask, client: FlaskClient, engine: Engine
) -> None:
    add_submission(engine, "sub_1")
    token = webhook_token([SECRET_KEY], submission_id="sub_1", user_id="user_1")
    headers = api_bearer(app)
    one = client.get("/api/v1/submissions/sub_1", headers=headers)
    page = client.get("/api/v1/submissions", headers=headers)
    assert one.status_code == page.status_code == 200
    assert "webhook_url" not in one.get_json()
    assert [set(item) & {"webhook_url"} for item in page.get_json()["data"]] == [set()]
    for answer in (one, page):
        assert token not in answer.get_data(as_text=True)
    schema = client.get("/api/v1/openapi.json").get_json()
    assert "webhook_url" not in schema["components"]["schemas"]["SubmissionBody"]["properties"]

    outbox = Outbox(
        render=submission_json,
        defaults=default_specs_for("https://app.example.com/hooks", events="all"),
    )
    body = encode(job_payload(submission_id=None, user_id=None))
    with engine.begin() as conn:
        submission = find_submission(conn, submission_id="sub_1")
        assert submission is not None
        apply_job_state(conn, submission, normalise(json.loads(body)), now=utcnow(), outbox=outbox)
    with engine.connect() as conn:
        (payload,) = conn.execute(sa.text("SELECT payload FROM notifications")).scalars()
    assert json.loads(payload)["data"]["submission_id"] == "sub_1"
    assert "webhook_url" not in json.loads(payload)["data"]
    assert token not in payload


def test_show_omits_the_url_and_webhook_url_prints_it(
    runner: FlaskCliRunner, engine: Engine
) -> None:
    add_submission(engine, "sub_1")
    token = webhook_token([SECRET_KEY], submission_id="sub_1", user_id="user_1")
    shown = runner.invoke(args=["submissions", "show", "sub_1"])
    assert shown.exit_code == 0, shown.output
    assert "webhook_url" not in json.loads(shown.stdout)
    assert token not in shown.output
    printed = runner.invoke(args=["webhook-url", "sub_1"])
    assert printed.stdout == f"https://hooks.example.com/webhooks/ittybit/{token}\n"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def unmigrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty database, not migrated: SQLite, and PostgreSQL when configured."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        server = postgres_url()
        if server is None:
            pytest.skip("PostgreSQL tests need TEST_DATABASE_URL")
        url = create_test_database(server)
    settings = Settings.from_env({"APP_ENV": "test", "SECRET_KEY": "x", "DATABASE_URL": url})
    engine = create_db_engine(settings)
    try:
        yield engine
    finally:
        engine.dispose()
        if request.param == "postgresql":
            drop_test_database(url)


def scrub_revision() -> tuple[str, str]:
    """Return the scrubbing migration's revision and the one before it, however numbered."""
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    for script in scripts.walk_revisions():
        if getattr(script.module, "SCRUBS_WEBHOOK_URLS", False):
            assert isinstance(script.down_revision, str)
            return script.revision, script.down_revision
    pytest.fail("no migration scrubs webhook URLs")


def test_the_migration_scrubs_stored_webhook_urls_and_keeps_the_rest(unmigrated: Engine) -> None:
    _, before = scrub_revision()
    upgrade(unmigrated, before)
    url = (
        "https://hooks.example.com/webhooks/ittybit/eyJzIjoic3ViXzEifQ.abcdefghijklmnopqrstuvwxyz0"
    )
    submission = {
        "submission_id": "sub_1",
        "user_id": "user_1",
        "status": "succeeded",
        "metadata": {"webhook_url": "kept: the application's own metadata", "é": "ü"},
        "webhook_url": url,
        "output_url": "https://cdn.example.com/a.mp4",
    }
    note = {"type": "submission.succeeded", "timestamp": "2026-12-01T00:00:00+00:00"}
    notification = json.dumps({**note, "data": submission}, separators=(",", ":"))
    answer = json.dumps(submission, separators=(",", ":"), sort_keys=True) + "\n"
    page = json.dumps({"data": [submission, submission], "next_cursor": None}, sort_keys=True)
    untouched = json.dumps({"error": "not_found", "message": "no webhook_url here"})
    at = utcnow()
    with unmigrated.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO notifications (message_id, submission_id, endpoint, event_type,"
                " payload, status, attempts, created_at, next_attempt_at)"
                " VALUES ('msg_1', 'sub_1', 'https://app.example.com/hooks',"
                " 'submission.succeeded', :payload, 'pending', 0, :at, :at)"
            ),
            {"payload": notification, "at": at},
        )
        conn.execute(
            sa.text(
                "INSERT INTO api_keys (id, name, key_hash, created_at)"
                " VALUES (1, 'app', :hash, :at)"
            ),
            {"hash": "0" * 64, "at": at},
        )
        for number, body in enumerate((answer, page, untouched, None)):
            conn.execute(
                sa.text(
                    "INSERT INTO api_idempotency (api_key_id, idempotency_key, request_hash,"
                    " status, body, created_at) VALUES (1, :key, :hash, 201, :body, :at)"
                ),
                {"key": f"key-{number}", "hash": "1" * 64, "body": body, "at": at},
            )

    upgrade(unmigrated, "head")

    with unmigrated.connect() as conn:
        (payload,) = conn.execute(sa.text("SELECT payload FROM notifications")).scalars()
        bodies = list(
            conn.execute(sa.text("SELECT body FROM api_idempotency ORDER BY id")).scalars()
        )
    scrubbed = {key: value for key, value in submission.items() if key != "webhook_url"}
    assert payload == json.dumps({**note, "data": scrubbed}, separators=(",", ":"))
    assert bodies == [
        json.dumps(scrubbed, separators=(",", ":"), sort_keys=True) + "\n",
        json.dumps({"data": [scrubbed, scrubbed], "next_cursor": None}, sort_keys=True),
        untouched,
        None,
    ]
    assert "/webhooks/ittybit/" not in payload + "".join(bodies[:3])


# --- a provider timestamp far in the future is clamped ----------------------------------------

T = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.usefixtures("token_only")
def test_a_forged_far_future_timestamp_is_clamped_and_cannot_pin_a_state(
    client: FlaskClient, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    add_submission(engine, "sub_1")
    forged = job_payload("job_1", "succeeded", updated_at="9999-12-31T23:59:59Z")
    with freeze_time(T), caplog.at_level(logging.WARNING, logger="receiver.flows.apply"):
        answer = post_json(client, token_url("sub_1"), forged)
    assert answer.status_code == 200, answer.get_json()
    stored = stored_submission(engine, "sub_1")
    assert stored["status"] == "succeeded"
    assert stored["provider_updated_at"] == T + timedelta(seconds=300)
    clamped = [
        r
        for r in caplog.records
        if getattr(r, "data", {}).get("event") == "future_timestamp_clamped"
    ]
    assert len(clamped) == 1
    assert "9999-12-31" in clamped[0].getMessage()

    # An hour later, the genuine final state carries a strictly later time: it wins.
    genuine = job_payload("job_1", "failed", updated_at=(T + timedelta(hours=1)).isoformat())
    genuine["error"] = {"message": "decoder failed"}
    with freeze_time(T + timedelta(hours=1)):
        later = post_json(client, token_url("sub_1"), genuine)
    assert later.get_json()["outcome"] == "applied"
    assert stored_submission(engine, "sub_1")["status"] == "failed"


def test_a_timestamp_within_the_tolerance_is_kept() -> None:
    state = normalise(
        {
            "id": "job_1",
            "status": "processing",
            "updated_at": (T + timedelta(seconds=299)).isoformat(),
        }
    )
    assert clamp_future(state, now=T) is state
    far = normalise({"id": "job_1", "status": "processing", "updated_at": "9999-12-31T00:00:00Z"})
    assert clamp_future(far, now=T).updated_at == T + timedelta(seconds=300)


# --- only http(s) output URLs become results ----------------------------------------------------


@pytest.mark.usefixtures("token_only")
@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("javascript:alert(document.cookie)", "output URL must be http(s), not 'javascript'"),
        ("data:text/html;base64,PHNjcmlwdD4=", "output URL must be http(s), not 'data'"),
        ({"url": "ftp://files.example.com/a.mp4"}, "output URL must be http(s), not 'ftp'"),
        ("/relative/a.mp4", "output URL must be http(s), not 'none'"),
        ("https:///no-host.mp4", "output URL has no host"),
    ],
)
def test_an_output_url_that_is_not_http_is_rejected_and_changes_nothing(
    client: FlaskClient, engine: Engine, output: Any, reason: str
) -> None:
    add_submission(engine, "sub_1")
    before = stored_submission(engine, "sub_1")
    answer = post_json(client, token_url("sub_1"), job_payload(output=output))
    assert answer.status_code == 403
    assert answer.get_json() == {"error": "rejected", "message": reason}
    assert stored_submission(engine, "sub_1") == before
    (row,) = stored_events(engine)
    assert (row["submission_id"], row["outcome"], row["reason"]) == ("sub_1", "rejected", reason)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM notifications")).scalar_one() == 0

    fine = post_json(client, token_url("sub_1"), job_payload(updated_at=1764590400))
    assert fine.get_json()["outcome"] == "applied"
    assert (
        stored_submission(engine, "sub_1")["output_url"] == "https://cdn.example.com/job_abc123.mp4"
    )


# --- a token the app signed for another purpose is no webhook token ---------------------------

CLAIMS = {"s": "sub_1", "u": "user_1"}


def test_tokens_signed_with_the_secret_key_under_other_salts_are_refused(
    app: Flask, client: FlaskClient, engine: Engine
) -> None:
    """The app's SECRET_KEY also signs admin sessions and CSRF tokens: none of them, nor
    itsdangerous' default salt, may pass for a submission's webhook URL."""
    add_submission(engine, "sub_1")
    key = app.secret_key
    assert key == SECRET_KEY
    session_serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    assert session_serializer is not None
    others = {
        "flask session (cookie-session)": session_serializer.dumps(CLAIMS),
        "flask-wtf csrf (wtf-csrf-token)": URLSafeTimedSerializer(key, salt="wtf-csrf-token").dumps(
            CLAIMS
        ),
        "itsdangerous default salt": URLSafeSerializer(key).dumps(CLAIMS),
        "itsdangerous default salt, timed": URLSafeTimedSerializer(key).dumps(CLAIMS),
    }
    body = encode(job_payload(submission_id=None, user_id=None))
    for name, token in others.items():
        with pytest.raises(VerificationError):
            verify_webhook_token([SECRET_KEY], token)
        answer = client.post(
            f"/webhooks/ittybit/{token}",
            data=body,
            headers=signed_headers(body, msg_id=f"msg_{len(name)}"),
        )
        assert answer.status_code == 401, name
        assert answer.get_json()["error"] == "bad_token", name
    genuine = URLSafeSerializer(key, salt=TOKEN_SALT).dumps(CLAIMS)
    assert verify_webhook_token([SECRET_KEY], genuine) == TokenClaims("sub_1", "user_1")
    assert stored_submission(engine, "sub_1")["status"] == "pending"
    assert stored_events(engine) == []


# --- production without ITTYBIT_WEBHOOK_SECRET says so --------------------------------------

TOKEN_ONLY = "ITTYBIT_WEBHOOK_SECRET is unset: deliveries are checked by URL token alone"


def production_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "APP_ENV": "production"}


def test_production_without_a_webhook_secret_warns_at_start_and_in_readyz(
    app_config: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    config = production_config(app_config)
    config.pop("ITTYBIT_WEBHOOK_SECRET")
    for _start in range(2):
        with caplog.at_level(logging.WARNING):
            app = create_app(config)
        try:
            warned = [r.getMessage() for r in caplog.records if TOKEN_ONLY in r.getMessage()]
            assert len(warned) == 1  # at every start, once
            caplog.clear()
            answer = app.test_client().get("/readyz")
            assert answer.status_code == 200
            body = answer.get_json()
            assert body["status"] == "ready"
            assert [w for w in body["warnings"] if w.startswith(TOKEN_ONLY)] == body["warnings"]
        finally:
            get_engine(app).dispose()


def test_production_with_a_webhook_secret_does_not_warn(
    app_config: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        app = create_app(production_config(app_config))
    try:
        assert not [r for r in caplog.records if TOKEN_ONLY in r.getMessage()]
        body = app.test_client().get("/readyz").get_json()
        assert body == {"status": "ready", "revision": head_revision()}
    finally:
        get_engine(app).dispose()


# --- refusals for one submission are capped -------------------------------------------------


def add_refusals(
    engine: Engine, submission_id: str, outcome: str, count: int, at: datetime
) -> None:
    """Store ``count`` refused deliveries for a submission, received at ``at``."""
    rows = [
        {
            "dedupe_key": f"old:{submission_id}:{outcome}:{at.isoformat()}:{n}",
            "received_at": at,
            "source": "url",
            "job_id": f"job_x{n}",
            "submission_id": submission_id,
            "body": "{}",
            "headers": {},
            "outcome": outcome,
            "reason": "earlier refusal",
        }
        for n in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(WebhookEvent.__table__), rows)  # type: ignore[attr-defined]


def unstored(app: Flask, outcome: str) -> float:
    value = get_metrics(app).registry.get_sample_value(
        "jobhooks_webhook_deliveries_unstored_total", {"outcome": outcome}
    )
    return value or 0.0


@pytest.mark.usefixtures("token_only")
def test_rejected_deliveries_past_the_cap_are_answered_alike_but_only_counted(
    app: Flask, client: FlaskClient, engine: Engine
) -> None:
    add_submission(engine, "sub_1")
    add_submission(engine, "sub_2")
    with freeze_time(T):
        add_refusals(engine, "sub_1", "rejected", 60, T - timedelta(minutes=59))
        add_refusals(engine, "sub_1", "unmatched", 39, T - timedelta(minutes=1))
        add_refusals(engine, "sub_1", "rejected", 50, T - timedelta(minutes=61))  # too old
        add_refusals(engine, "sub_2", "rejected", 100, T)  # another submission's
        refused = job_payload(submission_id="sub_1", user_id="someone_else")
        first = post_json(client, token_url("sub_1"), {**refused, "id": "job_a"})
        assert first.status_code == 403  # the 100th of the hour: stored
        assert unstored(app, "rejected") == 0
        before = len(stored_events(engine))
        for job in ("job_b", "job_c"):
            answer = post_json(client, token_url("sub_1"), {**refused, "id": job})
            assert answer.status_code == 403
            assert answer.get_json() == first.get_json()
        # A bad output URL is a refusal too.
        bad = post_json(client, token_url("sub_1"), job_payload(output="javascript:x"))
        assert bad.status_code == 403
    assert len(stored_events(engine)) == before
    assert unstored(app, "rejected") == 3
    assert stored_submission(engine, "sub_1")["status"] == "pending"

    # An hour later the window has moved on: refusals are stored again.
    with freeze_time(T + timedelta(hours=1, minutes=1)):
        later = post_json(client, token_url("sub_1"), {**refused, "id": "job_d"})
    assert later.status_code == 403
    assert len(stored_events(engine)) == before + 1
    # A delivery that is applied is never capped.
    with freeze_time(T):
        applied = post_json(client, token_url("sub_1"), job_payload(submission_id=None))
    assert applied.get_json()["outcome"] == "applied"


@pytest.mark.usefixtures("token_only")
def test_unmatched_deliveries_past_the_cap_are_answered_alike_but_only_counted(
    app: Flask, client: FlaskClient, engine: Engine
) -> None:
    payload = job_payload("job_1", "processing", submission_id=None, user_id=None)
    with freeze_time(T):
        kept = post_json(client, token_url("sub_new"), payload)
        assert kept.status_code == 202
        add_refusals(engine, "sub_new", "unmatched", 99, T)
        past = post_json(client, token_url("sub_new"), {**payload, "status": "finishing"})
        assert past.status_code == 202
        assert past.get_json() == {"outcome": "unmatched", "submission_id": "sub_new"}
        retry = post_json(client, token_url("sub_new"), payload)  # stored before the cap
        assert retry.get_json()["outcome"] == "duplicate"
    assert unstored(app, "unmatched") == 1
    rows = [row for row in stored_events(engine) if row["job_id"] == "job_1"]
    assert [row["provider_status"] for row in rows] == ["processing"]
