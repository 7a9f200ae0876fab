"""GET /metrics: deliveries, verification failures, latency, submissions by status, the
token, and gunicorn workers adding up (multiprocess mode, real gunicorn)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from pytest_httpserver import HTTPServer
from sqlalchemy.engine import Engine

from devtools.processes import WebProcess
from receiver import create_app
from receiver.core.signing import webhook_token
from receiver.flows.outbox import get_outbox
from receiver.ittybit.client import IttybitClient, set_testing
from receiver.observe.metrics import get_metrics
from receiver.store.engines import create_db_engine, get_engine
from receiver.store.models import Submission
from reconcile.passes import PassOptions, Reconciler
from tests.helpers import (
    OTHER_WEBHOOK_KEY,
    SECRET_KEY,
    WEBHOOK_SECRET,
    add_submission,
    encode,
    job_payload,
    signed_headers,
    token_url,
)
from tests.reconcile_helpers import FakeIttybit, Scripted, add_submissions

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
METRICS_TOKEN = "metrics-token-for-tests-0123456789"
_submissions = Submission.__table__  # type: ignore[attr-defined]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(client: FlaskClient, **headers: str) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=0.0.4")
    return parse(response.get_data(as_text=True))


def post(client: FlaskClient, url: str, body: bytes, headers: dict[str, str]) -> int:
    return client.post(url, data=body, headers=headers).status_code


def test_deliveries_are_counted_by_source_outcome_and_status(
    client: FlaskClient, engine: Engine
) -> None:
    add_submission(engine, "sub_1")
    applied = encode(job_payload())
    assert post(client, token_url(), applied, signed_headers(applied)) == 200
    assert post(client, token_url(), applied, signed_headers(applied)) == 200  # duplicate
    unmatched = encode(job_payload("job_2", submission_id="sub_2"))
    headers = signed_headers(unmatched, msg_id="msg_2")
    assert post(client, "/webhooks/ittybit", unmatched, headers) == 202
    foreign = encode(job_payload(user_id="user_2"))
    headers = signed_headers(foreign, msg_id="msg_3")
    assert post(client, "/webhooks/ittybit", foreign, headers) == 403
    forged = signed_headers(applied, key=OTHER_WEBHOOK_KEY)
    assert post(client, token_url(), applied, forged) == 401
    assert post(client, "/webhooks/ittybit", applied, forged) == 401
    assert post(client, "/webhooks/ittybit", applied, {"Content-Type": "application/json"}) == 401
    assert post(client, token_url() + "x", applied, signed_headers(applied)) == 401
    assert post(client, "/webhooks/ittybit", b"{", signed_headers(b"{")) == 400
    assert post(client, "/webhooks/ittybit", applied, {"Content-Type": "text/plain"}) == 415

    samples = scrape(client)
    deliveries = "jobhooks_webhook_deliveries_total"
    expected = {
        ("url", "applied", "200"): 1,
        ("url", "duplicate", "200"): 1,
        ("endpoint", "unmatched", "202"): 1,
        ("endpoint", "rejected", "403"): 1,
        ("url", "none", "401"): 2,
        ("endpoint", "none", "401"): 2,
        ("endpoint", "none", "400"): 1,
        ("endpoint", "none", "415"): 1,
    }
    counted = {
        (labels["source"], labels["outcome"], labels["status"]): count
        for (name, label_set), count in samples.items()
        if name == deliveries
        for labels in [dict(label_set)]
    }
    assert counted == expected
    failures = "jobhooks_webhook_verification_failures_total"
    assert value(samples, failures, source="url", reason="bad_signature") == 1
    assert value(samples, failures, source="url", reason="bad_token") == 1
    assert value(samples, failures, source="endpoint", reason="bad_signature") == 1
    assert value(samples, failures, source="endpoint", reason="missing_headers") == 1
    latency = "jobhooks_webhook_duration_seconds"
    assert value(samples, f"{latency}_count", source="url") == 4
    assert value(samples, f"{latency}_count", source="endpoint") == 6
    assert value(samples, f"{latency}_bucket", source="url", le="+Inf") == 4
    assert value(samples, f"{latency}_sum", source="url") > 0
    # Other requests are no deliveries.
    client.get("/healthz")
    assert value(scrape(client), f"{latency}_count", source="url") == 4


def test_submissions_by_status_are_read_at_scrape_time(client: FlaskClient, engine: Engine) -> None:
    for name in ("sub_1", "sub_2", "sub_3"):
        add_submission(engine, name)
    samples = scrape(client)
    assert value(samples, "jobhooks_database_up") == 1
    assert value(samples, "jobhooks_submissions", status="pending") == 3
    assert value(samples, "jobhooks_submissions", status="succeeded") == 0
    assert ("jobhooks_submissions", frozenset({("status", "expired")})) in samples

    with engine.begin() as conn:
        conn.execute(
            sa.update(_submissions)
            .where(_submissions.c.submission_id == "sub_1")
            .values(status="succeeded")
        )
    unmatched = encode(job_payload("job_9", submission_id="sub_9"))
    headers = signed_headers(unmatched, msg_id="msg_9")
    assert post(client, "/webhooks/ittybit", unmatched, headers) == 202
    samples = scrape(client)
    assert value(samples, "jobhooks_submissions", status="pending") == 2
    assert value(samples, "jobhooks_submissions", status="succeeded") == 1
    assert value(samples, "jobhooks_unmatched_events") == 1


def test_a_scrape_without_the_database_still_answers(
    app_config: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    if database_url.startswith("sqlite"):
        broken_url = f"sqlite:///{tmp_path / 'never-migrated.db'}"
    else:
        url = sa.make_url(database_url)
        broken_url = url.set(host="127.0.0.1", port=1).render_as_string(hide_password=False)
    app = create_app({**app_config, "DATABASE_URL": broken_url})
    try:
        samples = scrape(app.test_client())
    finally:
        get_engine(app).dispose()
    assert value(samples, "jobhooks_database_up") == 0
    assert not any(name == "jobhooks_submissions" for name, _ in samples)


@pytest.fixture
def guarded(app_config: dict[str, Any]) -> Iterator[Flask]:
    app = create_app({**app_config, "METRICS_TOKEN": METRICS_TOKEN})
    yield app
    get_engine(app).dispose()


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        f"Basic {METRICS_TOKEN}",
        "Bearer wrong-token",
        f"Bearer {METRICS_TOKEN}x",
        "\u2603",
    ],
)
def test_metrics_token_is_required_when_set(guarded: Flask, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = guarded.test_client().get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert response.get_json()["error"] == "unauthorized"
    assert METRICS_TOKEN not in response.get_data(as_text=True)


def test_metrics_token_lets_its_bearer_in(guarded: Flask) -> None:
    client = guarded.test_client()
    samples = scrape(client, Authorization=f"Bearer {METRICS_TOKEN}")
    assert value(samples, "jobhooks_database_up") == 1
    assert scrape(client, Authorization=f"bearer  {METRICS_TOKEN} ")


def test_production_without_metrics_token_answers_404_and_says_why(
    app_config: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        app = create_app({**app_config, "APP_ENV": "production"})
    try:
        response = app.test_client().get("/metrics")
        assert response.status_code == 404
        assert response.get_json()["error"] == "not_found"
        assert app.test_client().get("/healthz").status_code == 200
    finally:
        get_engine(app).dispose()
    said = [r.getMessage() for r in caplog.records if r.name == "receiver.web.metrics"]
    assert said == [
        "config: METRICS_TOKEN is not set: GET /metrics answers 404 in production; "
        "set it, and scrape with Authorization: Bearer <METRICS_TOKEN>"
    ]
    guarded = create_app({**app_config, "APP_ENV": "production", "METRICS_TOKEN": METRICS_TOKEN})
    try:
        assert guarded.test_client().get("/metrics").status_code == 401
    finally:
        get_engine(guarded).dispose()


# --- gunicorn: several workers, one answer --------------------------------------------------


def _booted(log: Path) -> list[int]:
    """Return the pids of the workers gunicorn booted so far, from its JSON log."""
    pids = []
    for line in log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        match = re.search(r"Booting worker with pid: (\d+)", json.loads(line)["message"])
        if match:
            pids.append(int(match.group(1)))
    return pids


def _http(method: str, url: str, body: bytes | None, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def server(gunicorn: Callable[..., WebProcess], database_url: str, tmp_path: Path) -> WebProcess:
    engine = create_db_engine_for(database_url)
    add_submission(engine, "sub_1")
    engine.dispose()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999999.db").write_bytes(b"left by a process long gone")
    return gunicorn(
        {
            "APP_ENV": "production",
            "DATABASE_URL": database_url,
            "SECRET_KEY": SECRET_KEY,
            "ITTYBIT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "WEB_CONCURRENCY": "2",
            "METRICS_TOKEN": METRICS_TOKEN,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
    )


def create_db_engine_for(database_url: str) -> Engine:
    from config.settings import Settings

    settings = Settings.from_env(
        {"APP_ENV": "test", "SECRET_KEY": SECRET_KEY, "DATABASE_URL": database_url}
    )
    return create_db_engine(settings)


def _scrape_http(base: str) -> Samples:
    request = urllib.request.Request(
        f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return parse(response.read().decode())


def _replace_worker(server: WebProcess, pid: int) -> None:
    """Stop one worker and wait until its replacement has loaded the app and counts itself."""
    booted = len(_booted(server.log_path))
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while (
        len(_booted(server.log_path)) == booted
        or value(_scrape_http(server.url), "jobhooks_web_workers") != 2
    ):
        if time.monotonic() > deadline:
            pytest.fail(f"gunicorn did not replace worker {pid}:\n{server.log_tail()}")
        time.sleep(0.1)


@pytest.mark.slow
def test_gunicorn_workers_add_up_and_log_one_json_line_per_request(
    server: WebProcess, tmp_path: Path
) -> None:
    base = server.url
    assert not (tmp_path / "metrics" / "counter_999999999.db").exists()
    token = webhook_token([SECRET_KEY], submission_id="sub_1", user_id="user_1")
    applied = encode(job_payload())
    signed = signed_headers(applied, msg_id="msg_applied")
    assert _http("POST", f"{base}/webhooks/ittybit/{token}", applied, signed) == 200
    forged = signed_headers(applied, key=OTHER_WEBHOOK_KEY)
    for _ in range(3):
        assert _http("POST", f"{base}/webhooks/ittybit", applied, forged) == 401
    for number in (1, 2):
        body = encode(job_payload(f"job_u{number}", submission_id=f"sub_u{number}"))
        headers = signed_headers(body, msg_id=f"msg_u{number}")
        assert _http("POST", f"{base}/webhooks/ittybit", body, headers) == 202

    # Both first workers go away: what they counted must still be in every answer.
    for pid in _booted(server.log_path)[:2]:
        _replace_worker(server, pid)
    for _ in range(2):
        assert _http("POST", f"{base}/webhooks/ittybit", applied, forged) == 401

    assert _http("GET", f"{base}/metrics", None, {}) == 401
    answers = [_scrape_http(base) for _ in range(4)]
    deliveries = "jobhooks_webhook_deliveries_total"
    for samples in answers:
        assert value(samples, deliveries, source="url", outcome="applied", status="200") == 1
        assert value(samples, deliveries, source="endpoint", outcome="none", status="401") == 5
        assert value(samples, deliveries, source="endpoint", outcome="unmatched", status="202") == 2
        failures = "jobhooks_webhook_verification_failures_total"
        assert value(samples, failures, source="endpoint", reason="bad_signature") == 5
        assert value(samples, "jobhooks_webhook_duration_seconds_count", source="endpoint") == 7
        # child_exit dropped the replaced workers' live gauges: two workers, not four.
        assert value(samples, "jobhooks_web_workers") == 2
        assert value(samples, "jobhooks_submissions", status="succeeded") == 1
        assert value(samples, "jobhooks_unmatched_events") == 2

    server.stop()
    everything = server.log_path.read_text()
    lines = [json.loads(line) for line in everything.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["logger"] == "jobhooks.request"]
    # Probes and scrapes that succeed are logged at debug; every delivery has its line.
    assert [line["status"] for line in requests] == [200, 401, 401, 401, 202, 202, 401, 401, 401]
    assert requests[0]["delivery_id"] == "msg_applied"
    assert requests[0]["path"] == "/webhooks/ittybit/[token]"
    assert len({line["request_id"] for line in requests}) == len(requests)
    assert token not in everything
    assert signed["webhook-signature"].removeprefix("v1,") not in everything
    assert METRICS_TOKEN not in everything
    assert SECRET_KEY not in everything


# --- the reconciler -------------------------------------------------------------------------


@pytest.fixture
def fake_api(app_config: dict[str, Any], api_server: HTTPServer) -> Iterator[FakeIttybit]:
    app_config["ITTYBIT_API_URL"] = api_server.url_for("").rstrip("/")
    set_testing(True)
    fake = FakeIttybit(api_server)
    yield fake
    fake.release()
    set_testing(False)


def test_reconcile_passes_and_jobs_are_counted_by_result(
    fake_api: FakeIttybit, app: Flask, engine: Engine
) -> None:
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    add_submissions(engine, [1, 2, 3, 4], changed_at=hour_ago, provider_status="processing")
    fake_api.job("job_1", "succeeded")
    fake_api.job("job_2", "failed")
    fake_api.job("job_3", "processing")
    fake_api.script("job_4", *[Scripted(500)] * 3)
    runner = app.test_cli_runner()

    assert runner.invoke(args=["reconcile", "--json"]).exit_code == 1
    assert runner.invoke(args=["reconcile", "--dry-run", "--submission", "sub_1"]).exit_code == 0
    assert runner.invoke(args=["reconcile", "--submission", "sub_1"]).exit_code == 0

    samples = scrape(app.test_client())
    jobs = "jobhooks_reconcile_jobs_total"
    assert value(samples, jobs, result="updated") == 1
    assert value(samples, jobs, result="failed") == 1
    assert value(samples, jobs, result="unchanged") == 2  # job_3, then sub_1 again
    assert value(samples, jobs, result="errors") == 1
    passes = "jobhooks_reconcile_passes_total"
    assert value(samples, passes, result="errors") == 1
    assert value(samples, passes, result="ok") == 1  # the dry run is not counted
    assert value(samples, "jobhooks_reconcile_pass_duration_seconds_count") == 2
    assert value(samples, "jobhooks_submissions", status="succeeded") == 1
    assert value(samples, "jobhooks_submissions", status="failed") == 1


def test_rematched_events_are_counted(client: FlaskClient, app: Flask, engine: Engine) -> None:
    body = encode(job_payload("job_7", submission_id="sub_7"))
    assert post(client, "/webhooks/ittybit", body, signed_headers(body)) == 202
    add_submission(engine, "sub_7")
    reconciler = Reconciler(
        engine,
        IttybitClient(base_url="http://127.0.0.1:9", api_key="unused"),
        PassOptions(),
        outbox=get_outbox(app),
        metrics=get_metrics(app),
    )
    assert reconciler.run_pass().rematched == 1
    samples = scrape(client)
    assert value(samples, "jobhooks_reconcile_rematched_events_total", result="matched") == 1
    assert value(samples, "jobhooks_reconcile_passes_total", result="ok") == 1
    assert value(samples, "jobhooks_unmatched_events") == 0
