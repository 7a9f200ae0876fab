"""The traces benchmark's own logic: its collector, what it counts, its targets and table.

The benchmark itself (``make bench BENCH_ARGS="--only traces"``) never runs in the suite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from bench.common import Database
from bench.run import render_table, verdicts
from bench.traces import Collector, opentelemetry_modules, webhook_spans
from tests.tooling.test_bench import _META, _webhook


def _run(tracing: str, **values: Any) -> dict[str, Any]:
    run = _webhook("real", worker="gthread", server_cpu_us=1200, tracing=tracing)
    run.update(otel_modules=0, spans=0)
    if tracing == "set":
        run.update(rps=800.0, server_cpu_us=1500, otel_modules=118, spans=10005)
        run["refused_exports"] = 0
    else:
        run["unset_spread"] = 0.04
    run.update(values)
    return run


def _failed(runs: list[dict[str, Any]]) -> set[str]:
    return {check["target"] for check in verdicts({"traces": runs}) if not check["ok"]}


UNSET = "traces sqlite unset: the web app loads no OpenTelemetry module"
SET = "traces sqlite set: a span exported for every webhook answered, nothing lost"


def test_unset_holds_when_no_opentelemetry_module_is_loaded() -> None:
    assert _failed([_run("unset"), _run("set")]) == set()
    assert _failed([_run("unset", otel_modules=1), _run("set")]) == {UNSET}


def test_set_needs_a_span_for_every_webhook_answered_and_nothing_lost() -> None:
    assert _failed([_run("unset"), _run("set", spans=9999)]) == {SET}
    assert _failed([_run("unset"), _run("set", lost=1)]) == {SET}
    assert _failed([_run("unset"), _run("set", errors=2)]) == {SET}
    assert _failed([_run("unset"), _run("set", refused_exports=1)]) == {SET}


def test_the_table_shows_the_traced_rate_against_unset_and_the_unset_spread() -> None:
    table = render_table({"meta": _META, "traces": [_run("unset"), _run("set")]})
    unset = "| sqlite | unset | 0 | 1000 | 5.0 | 20.0 | 0 | 10000/10000 | 0 | 1200 |  | 4% |"
    traced = "| sqlite | set | 118 | 800 | 5.0 | 20.0 | 0 | 10000/10000 | 10005 | 1500 | 80% |  |"
    assert unset in table
    assert traced in table


def test_the_collector_counts_what_the_otlp_exporter_sends_by_name() -> None:
    with Collector() as collector:
        provider = TracerProvider()
        exporter = OTLPSpanExporter(endpoint=f"{collector.url}/v1/traces")
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("bench-test")
        for name in ("POST /webhooks/ittybit", "POST /webhooks/ittybit/<token>", "GET /readyz"):
            with tracer.start_as_current_span(name):
                pass
        with tracer.start_as_current_span("POST /webhooks/ittybit"):
            pass
        provider.shutdown()
        refused = httpx.post(f"{collector.url}/v1/traces", content=b"\xff not protobuf")
        elsewhere = httpx.post(f"{collector.url}/v1/metrics", content=b"")
        spans = collector.counted()
    assert spans == {
        "POST /webhooks/ittybit": 2,
        "POST /webhooks/ittybit/<token>": 1,
        "GET /readyz": 1,
    }
    assert webhook_spans(spans) == 3
    assert collector.exports == 4
    assert (refused.status_code, collector.refused) == (400, 1)
    assert elsewhere.status_code == 404


def test_the_web_app_loads_opentelemetry_only_with_an_endpoint(tmp_path: Path) -> None:
    database = Database("sqlite", f"sqlite:///{tmp_path / 'traces.db'}")
    database.reset()
    assert opentelemetry_modules(database) == []
    traced = opentelemetry_modules(
        database, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9/unused"}
    )
    assert "opentelemetry.instrumentation.flask" in traced
    assert "opentelemetry.sdk.trace" in traced
