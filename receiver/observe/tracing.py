"""OpenTelemetry traces, when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; nothing otherwise.

Unset, not one OpenTelemetry module is imported and :func:`span` is a no-op: the webhook
path pays nothing for traces it does not send. Set, the standard SDK exports over OTLP/HTTP
(its other ``OTEL_*`` variables apply as documented: headers, service name, sampler), and
the Flask and httpx instrumentations make the request and client spans, with the stable
HTTP semantic conventions' names (``http.request.method``, ``http.route``,
``http.response.status_code``, ``url.full``).

A request's span is named ``{method} {route}`` by the Flask instrumentation: the URL rule,
never the path, which can hold a per-submission token; its path and query attributes are
replaced by the route, and a client URL loses its credentials and query.

No SQL spans: opentelemetry-instrumentation-sqlalchemy (0.66b1) declares "sqlalchemy < 2.1"
and, made to run on the locked 2.1, fails (it imports the asyncio extension, which needs
greenlet, and cannot remove its listeners). The pass and notification spans time the work.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from flask import Flask
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

__all__ = ["ENDPOINT", "Tracing", "init_app", "span", "start", "start_worker", "stop"]

ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
#: The instrumentations' HTTP attributes: the stable names only (``http/dup`` would add the
#: old ones, which are cleaned as well).
_SEMCONV_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"
#: Server attributes that carry the raw path or query (a token, a signature).
_RAW_TARGETS = ("url.path", "url.query", "http.target")
#: Client attributes that carry a whole URL, whose credentials and query are dropped.
_URLS = ("url.full", "http.url")

_active: Tracing | None = None


def enabled(environ: Mapping[str, str]) -> bool:
    """Tell whether traces are to be exported."""
    return bool(environ.get(ENDPOINT) or environ.get(_TRACES_ENDPOINT))


def init_app(app: Flask, environ: Mapping[str, str]) -> None:
    """Trace the web process (requests, HTTP calls) when ``environ`` asks."""
    if enabled(environ):
        start(environ, service_name="jobhooks-web").instrument_app(app)


def start_worker(environ: Mapping[str, str]) -> None:
    """Trace the worker (passes, notification attempts, HTTP calls) when ``environ`` asks."""
    if enabled(environ):
        start(environ, service_name="jobhooks-worker")


def start(
    environ: Mapping[str, str], *, service_name: str, exporter: SpanExporter | None = None
) -> Tracing:
    """Set up the SDK and the httpx instrumentation; ``exporter`` stands in for OTLP (tests).

    One tracing per process: starting again stops the previous one first.
    """
    global _active
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    stop()
    # Read once, when the first instrumentation loads: the stable names, unless told otherwise.
    os.environ.setdefault(_SEMCONV_OPT_IN, "http")
    # OTEL_SERVICE_NAME, when set, names the service; attributes given here would override it.
    named = "OTEL_SERVICE_NAME" in os.environ
    resource = Resource.create({} if named else {"service.name": service_name})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(_redactor())
    if exporter is None:
        exporter = _otlp_exporter(environ)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _active = Tracing(provider)
    _active.instrument_httpx()
    return _active


def stop() -> None:
    """Flush and end the current tracing, and take every instrumentation off."""
    global _active
    if _active is not None:
        active, _active = _active, None
        active.shutdown()


@contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Span | None]:
    """Run the block in a span named ``name`` (yield it), or in nothing when traces are off."""
    if _active is None:
        yield None
        return
    with _active.tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current


class Tracing:
    """A process's tracer provider and the instrumentations it fed."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("jobhooks")
        self._apps: list[Flask] = []
        self._instrumentors: list[Any] = []

    def instrument_app(self, app: Flask) -> None:
        """Make a server span per request, named ``{method} {route}``."""
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        FlaskInstrumentor.instrument_app(  # type: ignore[no-untyped-call]
            app, tracer_provider=self.provider, response_hook=_route_for_path
        )
        self._apps.append(app)

    def instrument_httpx(self) -> None:
        """Make a client span per HTTP request (each attempt: ittybit, notifications)."""
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        instrumentor = HTTPXClientInstrumentor()
        instrumentor.instrument(tracer_provider=self.provider)
        self._instrumentors.append(instrumentor)

    def shutdown(self) -> None:
        """Take the instrumentations off, then flush and close the exporter."""
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        for app in self._apps:
            FlaskInstrumentor.uninstrument_app(app)  # type: ignore[no-untyped-call]
        for instrumentor in self._instrumentors:
            instrumentor.uninstrument()
        self.provider.shutdown()


def _otlp_exporter(environ: Mapping[str, str]) -> SpanExporter:
    """Export to the traces endpoint, or ``/v1/traces`` under the OTLP endpoint (as the
    specification says), read from ``environ`` (tests pass their own)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = environ.get(_TRACES_ENDPOINT) or environ[ENDPOINT].rstrip("/") + "/v1/traces"
    return OTLPSpanExporter(endpoint=endpoint)


def redact_url(url: str) -> str:
    """Return ``url`` without its credentials, query and fragment (where keys travel)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _route_for_path(span: Span, _status: str, _headers: list[tuple[str, str]]) -> None:
    """Put the route where the path and query were (they can hold a token, a signature).

    Called as the response starts: the instrumentation sets the request's attributes again
    after its request hook, so this is the first moment they stay as set here.
    """
    if not span.is_recording():
        return
    attributes: Mapping[str, Any] = getattr(span, "attributes", None) or {}
    route = str(attributes.get("http.route") or "")
    for key in _RAW_TARGETS:
        if key in attributes:
            span.set_attribute(key, "" if key == "url.query" else route)
    if "http.url" in attributes:
        span.set_attribute("http.url", "")


def _redactor() -> SpanProcessor:
    from opentelemetry.sdk.trace import SpanProcessor

    class _Redactor(SpanProcessor):
        """Take credentials and query off the URL an HTTP client span starts with."""

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            attributes = span.attributes or {}
            for key in _URLS:
                value = attributes.get(key)
                if isinstance(value, str):
                    span.set_attribute(key, redact_url(value))

    return _Redactor()
