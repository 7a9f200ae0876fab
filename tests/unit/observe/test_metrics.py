"""GET /metrics: deliveries, verification failures, latency, submissions by status, the
token (gunicorn workers adding up: tests/process/test_metrics_gunicorn.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from pytest_httpserver import HTTPServer
from sqlalchemy.engine import Engine

from receiver import create_app
from receiver.flows.outbox import get_outbox
from receiver.ittybit.client import IttybitClient, set_testing
from receiver.observe import metrics as metrics_module
from receiver.observe.metrics import get_metrics
from receiver.store.engines import get_engine
from receiver.store.models import Submission
from reconcile.passes import PassOptions, Reconciler
from tests.helpers import (
    OTHER_WEBHOOK_KEY,
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


def test_a_scrape_survives_a_worker_that_exits_while_it_reads(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gunicorn removes an exited worker's files between the collector's listing and read."""
    reads: list[int] = []

    class VanishingFiles:
        """Read the workers' files: the first read finds one gone, as after a child_exit."""

        def __init__(self, registry: Any) -> None:
            registry.register(self)

        def collect(self) -> Iterator[GaugeMetricFamily]:
            reads.append(1)
            if len(reads) == 1:
                raise FileNotFoundError("gauge_livesum_4242.db")
            yield GaugeMetricFamily("jobhooks_web_workers", "Live web workers.", value=1)

    monkeypatch.setattr(metrics_module, "multiprocess", lambda: True)
    monkeypatch.setattr(metrics_module, "MultiProcessCollector", VanishingFiles)
    with app.app_context():
        samples = list(text_string_to_metric_families(get_metrics().exposition().decode()))
    assert len(reads) == 2
    assert [family.name for family in samples if family.name == "jobhooks_web_workers"] == [
        "jobhooks_web_workers"
    ]


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


def test_rematched_events_are_counted(
    client: FlaskClient, app: Flask, engine: Engine, no_retry_waits: None
) -> None:
    # Nothing answers on port 9: the pass's event-list read fails after its retries.
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
