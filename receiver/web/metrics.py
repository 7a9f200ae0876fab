"""``GET /metrics`` and the after-request hook that counts webhook deliveries."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

from config.settings import Settings
from receiver.observe.logs import current
from receiver.observe.metrics import EXTENSION, Metrics, get_metrics
from receiver.store.engines import get_read_engine
from receiver.web.errors import error_response

__all__ = ["bp", "init_app"]

#: The inbox's ``source`` for each webhook view.
_SOURCES = {"webhooks.submission_webhook": "url", "webhooks.project_webhook": "endpoint"}

bp = Blueprint("metrics", __name__)
log = logging.getLogger(__name__)


def _observer(metrics: Metrics) -> Callable[[Response], Response]:
    """Return the after-request function counting webhook deliveries into ``metrics``."""

    def observe(response: Response) -> Response:
        # The request object itself, not the proxy: a read through it costs ~9,000
        # instructions, and this runs after every request.
        req = request._get_current_object()  # type: ignore[attr-defined]
        source = _SOURCES.get(req.endpoint or "")
        if source is None:
            return response
        state = current()
        if state is not None:
            fields = state.fields
            metrics.observe_delivery(
                source=source,
                outcome=fields.get("outcome", "none"),
                status=response.status_code,
                error=fields.get("error"),
                seconds=state.duration(),
            )
        return response

    return observe


@bp.get("/metrics")
def metrics_view() -> Response:
    """Answer Prometheus' scrape; with METRICS_TOKEN set, only to its bearer."""
    settings: Settings = current_app.extensions["jobhooks.settings"]
    if settings.metrics_token and not _authorized(settings.metrics_token):
        response = error_response(
            401, "unauthorized", "GET /metrics needs Authorization: Bearer <METRICS_TOKEN>"
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return Response(
        get_metrics().exposition(), mimetype=None, content_type=CONTENT_TYPE_PLAIN_0_0_4
    )


def _authorized(token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def init_app(app: Flask, settings: Settings) -> None:
    """Create the app's metrics, count webhook deliveries and serve ``GET /metrics``.

    In production ``/metrics`` is served only behind ``METRICS_TOKEN``: without one it
    answers 404 (the numbers name endpoints and show traffic), and start-up says why.
    """
    metrics = app.extensions[EXTENSION] = Metrics(get_read_engine(app))
    app.after_request(_observer(metrics))
    if settings.env == "production" and not settings.metrics_token:
        log.warning(
            "config: METRICS_TOKEN is not set: GET /metrics answers 404 in production; "
            "set it, and scrape with Authorization: Bearer <METRICS_TOKEN>"
        )
        return
    app.register_blueprint(bp)
