"""The admin's notification endpoints: each with its health, and disable, enable, replay.

The buttons call the same flows as ``jobhooks endpoints`` and ``jobhooks notify replay``;
every one is a POST with the CSRF token (checked by ``auth.guard``).
"""

from __future__ import annotations

from datetime import timedelta

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from config.settings import Settings
from receiver.flows.endpoints import (
    EndpointError,
    disable_endpoint,
    enable_endpoint,
    endpoint_json,
    get_endpoint,
    list_endpoints,
)
from receiver.flows.outbox import endpoint_label, replay_endpoint
from receiver.store.engines import get_engine, get_read_engine
from receiver.store.models import utcnow
from receiver.web.admin.auth import safe_next
from receiver.web.admin.views import bp

__all__ = ["endpoint_disable", "endpoint_enable", "endpoint_replay", "endpoints"]

#: What the replay button sends again: the last day of the endpoint's notifications.
REPLAY_WINDOW = timedelta(hours=24)


@bp.get("/endpoints")
def endpoints() -> ResponseReturnValue:
    """List the notification endpoints with their health (never their secrets)."""
    with get_read_engine().connect() as conn:
        rows = [
            {**endpoint_json(row), "label": endpoint_label(row.url)} for row in list_endpoints(conn)
        ]
    return render_template("admin/endpoints.html", endpoints=rows)


def _endpoint_id() -> str:
    endpoint_id = request.form.get("endpoint_id", "").strip()[:40]
    with get_read_engine().connect() as conn:
        try:
            get_endpoint(conn, endpoint_id)
        except EndpointError:
            abort(404, "No such endpoint.")
    return endpoint_id


def _back() -> ResponseReturnValue:
    return redirect(safe_next(request.form.get("next")) or url_for("admin.endpoints"))


@bp.post("/actions/endpoint-disable")
def endpoint_disable() -> ResponseReturnValue:
    """Disable an endpoint: its notifications are held."""
    endpoint_id = _endpoint_id()
    with get_engine().begin() as conn:
        disable_endpoint(conn, endpoint_id, reason="disabled in the admin view", now=utcnow())
    flash(f"Endpoint {endpoint_id} is disabled: its notifications are held.", "ok")
    return _back()


@bp.post("/actions/endpoint-enable")
def endpoint_enable() -> ResponseReturnValue:
    """Enable an endpoint: its held notifications go out, oldest first per submission."""
    endpoint_id = _endpoint_id()
    settings: Settings = current_app.extensions["jobhooks.settings"]
    with get_engine().begin() as conn:
        resumed, dead = enable_endpoint(
            conn, endpoint_id, now=utcnow(), max_age=settings.notify_max_age
        )
    message = f"Endpoint {endpoint_id} is enabled: {resumed} waiting notification(s) resume."
    if dead:
        ids = ", ".join(str(item["id"]) for item in dead[:20])
        message += f" {len(dead)} older than NOTIFY_MAX_AGE made dead: {ids}."
    flash(message, "ok")
    return _back()


@bp.post("/actions/endpoint-replay")
def endpoint_replay() -> ResponseReturnValue:
    """Send the endpoint's notifications of the last 24 hours again, with their webhook-id."""
    endpoint_id = _endpoint_id()
    now = utcnow()
    with get_engine().begin() as conn:
        count = replay_endpoint(conn, endpoint_id, since=now - REPLAY_WINDOW, now=now, status=None)
    flash(f"{count} notification(s) to {endpoint_id} will be sent again, in order.", "ok")
    return _back()
