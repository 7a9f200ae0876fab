"""Traces: what exporting OpenTelemetry traces costs the webhook path, and what unset costs.

For each database the webhook load of the webhook benchmark (the real app, the Procfile's
worker class, 16 connections, ``--duration``, ``--deliveries``) runs three times on fresh
deliveries: with ``OTEL_EXPORTER_OTLP_ENDPOINT`` unset, set, and unset again; the traced run
is compared with the better unset run. Set, the web process exports to :class:`Collector`,
a local OTLP/HTTP endpoint in this process that decodes every export and counts its spans
by name, so the table shows that each webhook was traced, not only what it cost.

Unset, the claim is that the webhook path runs no tracing code at all. What shows it is
what a fresh process loads when it makes the web app as ``wsgi.py`` does
(:func:`opentelemetry_modules`): no OpenTelemetry module unset, the SDK and the
instrumentations set. The two unset runs beside each other show how far two runs of the
same code differ on this machine, the floor under which a cost cannot be measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from bench.common import ROOT, Database, service_env
from bench.webhook import run_one, seed_submissions, write_deliveries

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = [
    "WEBHOOK_SPANS",
    "Collector",
    "opentelemetry_modules",
    "run_traces",
    "webhook_spans",
]

#: The server spans of the two webhook routes, as the Flask instrumentation names them.
WEBHOOK_SPANS = ("POST /webhooks/ittybit", "POST /webhooks/ittybit/<token>")

#: Run in a fresh process with the service's environment: make the web app as ``wsgi.py``
#: does, then print the OpenTelemetry modules loaded.
_COUNT_MODULES = (
    "import json, sys\n"
    "import wsgi  # noqa: F401\n"
    "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'opentelemetry')))\n"
)


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


class Collector:
    """An OTLP/HTTP trace endpoint on a free port: it counts the spans it is sent, by name.

    Each export (``POST /v1/traces``, protobuf) is decoded with the OTLP's own message
    classes; anything it cannot decode is answered 400 and counted as refused.
    """

    def __init__(self) -> None:
        self.spans: Counter[str] = Counter()
        self.exports = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True, request_handler=_Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The endpoint as ``OTEL_EXPORTER_OTLP_ENDPOINT`` takes it (the SDK adds the path)."""
        return f"http://127.0.0.1:{self._server.port}"

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        request = Request(environ)
        if request.method != "POST" or request.path != "/v1/traces":
            return Response(status=404)(environ, start_response)
        export = ExportTraceServiceRequest()
        try:
            export.ParseFromString(request.get_data())
        except DecodeError:
            with self._lock:
                self.refused += 1
            return Response(status=400)(environ, start_response)
        names = [
            span.name
            for resource in export.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        with self._lock:
            self.exports += 1
            self.spans.update(names)
        return Response(status=200, content_type="application/x-protobuf")(environ, start_response)

    def counted(self) -> Counter[str]:
        """Return the spans received so far, by name."""
        with self._lock:
            return Counter(self.spans)

    def __enter__(self) -> Collector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)


def webhook_spans(spans: Mapping[str, int]) -> int:
    """Return how many of ``spans`` are a webhook request's server span."""
    return sum(spans.get(name, 0) for name in WEBHOOK_SPANS)


def opentelemetry_modules(database: Database, extra: Mapping[str, str] | None = None) -> list[str]:
    """Return the OpenTelemetry modules a fresh process loads making the web app."""
    env = service_env(database, **dict(extra or {}))
    done = subprocess.run(
        [sys.executable, "-c", _COUNT_MODULES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        message = f"making the web app failed:\n{done.stderr.decode(errors='replace')}"
        raise RuntimeError(message)
    modules: list[str] = json.loads(done.stdout.decode().splitlines()[-1])
    return modules


#: The runs, in order: (name, traced).
_PLAN = (("u1", False), ("on", True), ("u2", False))


def run_traces(
    database: Database,
    *,
    deliveries_per_run: int,
    duration: float,
    workdir: Path,
    progress: Any = print,
) -> list[dict[str, Any]]:
    """Load the webhook path unset, traced and unset again; return the better unset run and
    the traced one, each with the OpenTelemetry modules the web app loads so configured."""
    database.reset()
    measured: dict[str, dict[str, Any]] = {}
    with Collector() as collector:
        traced_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}
        modules = {
            False: opentelemetry_modules(database),
            True: opentelemetry_modules(database, traced_env),
        }
        loads = {
            name: seed_submissions(database, f"tr{name}", deliveries_per_run) for name, _ in _PLAN
        }
        for name, traced in _PLAN:
            progress(f"traces: {database.name}, {'set' if traced else 'unset'}")
            # Signed just before the run, so every delivery is inside the timestamp tolerance.
            path = workdir / f"traces-{database.name}-{name}.tsv"
            write_deliveries(path, database, f"tr{name}", loads[name])
            before = webhook_spans(collector.counted())
            run = run_one(
                database,
                app="real",
                worker="gthread",
                connections=16,
                duration=duration,
                deliveries=path,
                tag=f"tr{name}",
                workdir=workdir,
                env=traced_env if traced else None,
            )
            # The server is stopped: each worker flushed its spans as it exited.
            spans = webhook_spans(collector.counted()) - before
            measured[name] = {
                **run.as_dict(),
                "tracing": "set" if traced else "unset",
                "otel_modules": len(modules[traced]),
                "spans": spans,
            }
        refused = collector.refused
    best = max(measured["u1"], measured["u2"], key=lambda run: run["rps"])
    other = measured["u2"] if best is measured["u1"] else measured["u1"]
    return [
        {**best, "unset_spread": round(1 - other["rps"] / best["rps"], 3) if best["rps"] else 0},
        {**measured["on"], "refused_exports": refused},
    ]
