"""Traces: the spans of a webhook, a reconcile pass and a notification attempt, read from the
SDK's in-memory exporter; the OTLP export create_app wires; nothing at all when unset."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from flask import Flask
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pytest_httpserver import HTTPServer
from sqlalchemy.engine import Engine

from devtools.notify_app import NotifyApp
from receiver import create_app
from receiver.ittybit.client import IttybitClient, RetryPolicy
from receiver.observe import tracing
from receiver.store.engines import get_engine
from reconcile.notifier import Backoff, Notifier
from reconcile.passes import PassOptions, Reconciler
from tests.helpers import (
    SECRET_KEY,
    WEBHOOK_SECRET,
    add_submission,
    encode,
    job_payload,
    quiet_outbox,
    signed_headers,
    token_url,
)
from tests.notify_helpers import NOTIFY_KEY, NOTIFY_SECRET, add_submissions, change, outbox_to
from tests.reconcile_helpers import API_KEY, FakeIttybit
from tests.reconcile_helpers import add_submissions as add_stuck

#: A secret passed in a query string: no span may keep it.
QUERY_SECRET = "query-secret-7f3a9c"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory; every instrumentation taken off after the test."""
    spans = InMemorySpanExporter()
    tracing.start({}, service_name="jobhooks-test", exporter=spans)
    yield spans
    tracing.stop()


def attributes_text(spans: tuple[ReadableSpan, ...]) -> str:
    """Every span's name, attributes and events' attributes, as one string to search."""
    parts: list[str] = []
    for span in spans:
        parts.append(span.name)
        parts.extend(f"{key}={value}" for key, value in (span.attributes or {}).items())
        for event in span.events:
            parts.extend(f"{key}={value}" for key, value in (event.attributes or {}).items())
    return "\n".join(parts)


def assert_no_secret(spans: tuple[ReadableSpan, ...], *secrets: str) -> None:
    text = attributes_text(spans)
    for secret in secrets:
        assert secret not in text


def test_a_signed_webhook_request_is_one_span_named_by_its_route(
    app: Flask, engine: Engine, exporter: InMemorySpanExporter
) -> None:
    assert tracing._active is not None
    tracing._active.instrument_app(app)
    add_submission(engine)
    body = encode(job_payload())
    url = token_url()
    token = url.rsplit("/", 1)[1]

    response = app.test_client().post(
        f"{url}?api_key={QUERY_SECRET}", data=body, headers=signed_headers(body)
    )

    assert response.status_code == 200
    [server] = [span for span in exporter.get_finished_spans() if span.kind.name == "SERVER"]
    assert server.name == "POST /webhooks/ittybit/<token>"
    attributes = dict(server.attributes or {})
    assert attributes["http.request.method"] == "POST"
    assert attributes["http.route"] == "/webhooks/ittybit/<token>"
    assert attributes["http.response.status_code"] == 200
    assert attributes["url.path"] == "/webhooks/ittybit/<token>"
    assert not attributes.get("url.query")
    assert "http.target" not in attributes
    assert_no_secret(exporter.get_finished_spans(), token, QUERY_SECRET, SECRET_KEY, WEBHOOK_SECRET)


def test_a_reconcile_pass_is_a_span_with_one_client_span_per_ittybit_call(
    engine: Engine, fake: FakeIttybit, no_retry_waits: None, exporter: InMemorySpanExporter
) -> None:
    add_stuck(engine, [1, 2], changed_at=NOW - timedelta(hours=1), provider_status="processing")
    fake.job("job_1", "succeeded")
    fake.job("job_2", "failed")
    options = PassOptions(
        stuck_after=900.0, give_up_after=86400.0, batch=10, concurrency=2, lease_seconds=300.0
    )
    retry = RetryPolicy(attempts=2)
    url = f"{fake.url}/?key={QUERY_SECRET}"
    with IttybitClient(base_url=fake.url, api_key=API_KEY, timeout=2, retry=retry) as client:
        reconciler = Reconciler(engine, client, options, outbox=quiet_outbox(), clock=lambda: NOW)
        summary = reconciler.run_pass()
    with httpx.Client() as other:
        other.get(url)  # a key in a query, as a misconfigured URL could hold
    assert (summary.checked, summary.updated, summary.failed) == (2, 1, 1)
    spans = exporter.get_finished_spans()
    [pass_span] = [span for span in spans if span.name == "reconcile pass"]
    attributes = dict(pass_span.attributes or {})
    assert attributes["jobhooks.reconcile.checked"] == 2
    assert attributes["jobhooks.reconcile.failed"] == 1
    assert attributes["jobhooks.reconcile.errors"] == 0
    calls = [span for span in spans if span.kind.name == "CLIENT" and span.name == "GET"]
    jobs = sorted(str((span.attributes or {})["url.full"]) for span in calls)
    assert f"{fake.url}/jobs/job_1" in jobs
    assert f"{fake.url}/jobs/job_2" in jobs
    assert f"{fake.url}/" in jobs  # the query dropped
    for span in calls:
        assert (span.attributes or {})["http.request.method"] == "GET"
        assert "http.response.status_code" in (span.attributes or {})
    assert_no_secret(spans, API_KEY, QUERY_SECRET)


def test_a_notification_attempt_is_a_span_around_its_request(
    engine: Engine, exporter: InMemorySpanExporter
) -> None:
    with NotifyApp([NOTIFY_SECRET]) as application:
        [sid] = add_submissions(engine, 1)
        endpoint = f"{application.url}?token={QUERY_SECRET}"
        change(engine, outbox_to(endpoint), sid, "succeeded")
        notifier = Notifier(engine, max_age=60.0, backoff=Backoff(first=0.05, cap=0.4))
        with notifier:
            tally = notifier.run()

    assert tally.delivered == 1
    spans = exporter.get_finished_spans()
    [attempt] = [span for span in spans if span.name == "notify submission.succeeded"]
    attributes = dict(attempt.attributes or {})
    assert attributes["jobhooks.notification.attempt"] == 1
    assert attributes["jobhooks.notification.result"] == "delivered"
    assert attributes["http.response.status_code"] == 204
    [post] = [span for span in spans if span.kind.name == "CLIENT" and span.name == "POST"]
    assert post.parent is not None and post.parent.span_id == attempt.context.span_id
    assert (post.attributes or {})["url.full"] == application.url
    assert_no_secret(spans, QUERY_SECRET, NOTIFY_SECRET, NOTIFY_KEY.decode())


def test_create_app_exports_over_otlp_when_the_endpoint_is_set(
    app_config: dict[str, Any], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/v1/traces", method="POST").respond_with_data(b"")
    app_config["OTEL_EXPORTER_OTLP_ENDPOINT"] = httpserver.url_for("/")
    app = create_app(app_config)
    try:
        assert app.test_client().get("/healthz").status_code == 200
    finally:
        tracing.stop()  # flushes the batch
        get_engine(app).dispose()

    names = []
    for request, _ in httpserver.log:
        export = ExportTraceServiceRequest.FromString(request.get_data())
        for resource in export.resource_spans:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}
            assert service["service.name"] == "jobhooks-web"
            for scope in resource.scope_spans:
                names.extend(span.name for span in scope.spans)
    assert "GET /healthz" in names


def test_the_worker_traces_only_with_an_endpoint(httpserver: HTTPServer) -> None:
    tracing.start_worker({})
    assert tracing._active is None
    httpserver.expect_request("/v1/traces", method="POST").respond_with_data(b"")
    tracing.start_worker({"OTEL_EXPORTER_OTLP_ENDPOINT": httpserver.url_for("/")})
    try:
        with tracing.span("reconcile pass"):
            pass
    finally:
        tracing.stop()
    [(request, _)] = httpserver.log
    export = ExportTraceServiceRequest.FromString(request.get_data())
    [resource] = export.resource_spans
    service = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert service["service.name"] == "jobhooks-worker"
    assert [span.name for scope in resource.scope_spans for span in scope.spans] == [
        "reconcile pass"
    ]
