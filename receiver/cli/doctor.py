"""``jobhooks doctor``: check the whole chain, one line per check, each with its fix.

Settings → database (reachable, migrated, connections against ``max_connections``) →
ittybit (the key, the endpoint) → webhooks arriving → notifications. Exit 0 when no check
fails (warnings allowed), 1 otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import click
import sqlalchemy as sa
from flask import Flask
from flask.cli import ScriptInfo
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from config.settings import ConfigError, Settings
from receiver import create_app
from receiver.cli.common import ONE_OFF_LOG_LEVEL
from receiver.flows.endpoints import list_endpoints
from receiver.ittybit.client import ApiError, AuthError, IttybitClient, client_from_settings
from receiver.store.engines import MAX_OVERFLOW, POOL_SIZE, get_engine, migration_state
from receiver.store.models import Notification, NotificationStatus, WebhookEvent, utcnow

__all__ = ["Check", "doctor_command"]

_inbox = WebhookEvent.__table__  # type: ignore[attr-defined]
_notifications = Notification.__table__  # type: ignore[attr-defined]
#: Connections one process may open: its pool and the overflow beyond it.
_PER_PROCESS = POOL_SIZE + MAX_OVERFLOW
#: The worker's processes beside the web ones: reconcile and notify (Procfile's worker).
_WORKER_PROCESSES = 1
_NO_RESOURCE = frozenset({404, 405, 501})


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report: ``ok``, ``warn`` or ``fail``, what was seen, and the fix."""

    name: str
    level: str
    message: str
    fix: str | None = None

    def line(self) -> str:
        """Return the check as one line."""
        fix = f" (fix: {self.fix})" if self.fix and self.level != "ok" else ""
        return f"{self.level:<4}  {self.name:<13} {self.message}{fix}"


def _load(ctx: click.Context) -> Flask | Check:
    info = ctx.find_object(ScriptInfo)
    try:
        if info is not None and info.create_app is not None:
            return info.load_app()
        log_level = None if "LOG_LEVEL" in os.environ else ONE_OFF_LOG_LEVEL
        return create_app(web=False, log_level=log_level)
    except ConfigError as exc:
        return Check("settings", "fail", str(exc), "set the variable as the README's table says")


def check_settings(settings: Settings) -> Check:
    """Say the settings are valid, which API version is asked for, and any warning."""
    version = settings.ittybit_api_version or "the key's default"
    if settings.warnings:
        return Check("settings", "warn", "; ".join(settings.warnings), "see the README")
    return Check("settings", "ok", f"valid; ittybit API version: {version}")


def check_database(engine: Engine, settings: Settings) -> list[Check]:
    """Check the database is reachable, at the head revision, and has connections enough."""
    try:
        current, head = migration_state(engine)
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or type(exc).__name__).split("\n", 1)[0][:200]
        fix = "check DATABASE_URL and that the server is up"
        return [Check("database", "fail", f"unreachable: {detail}", fix)]
    checks = [Check("database", "ok", f"reachable ({engine.dialect.name})")]
    if current != head:
        fix = "run `jobhooks db upgrade` (the Procfile's release does)"
        checks.append(Check("migrations", "fail", f"at {current}, head is {head}", fix))
    else:
        checks.append(Check("migrations", "ok", f"at head ({head})"))
    checks.append(_connections(engine, settings))
    return checks


def _connections(engine: Engine, settings: Settings) -> Check:
    if engine.dialect.name != "postgresql":
        return Check("connections", "ok", "SQLite: one file, no server connection limit")
    # A web process's threads each hold one connection at a time, up to its pool's size.
    per_web = min(settings.web_threads, _PER_PROCESS)
    wanted = settings.web_concurrency * per_web + _WORKER_PROCESSES * _PER_PROCESS
    with engine.connect() as conn:
        limit = int(conn.execute(sa.text("SHOW max_connections")).scalar_one())
        reserved = int(conn.execute(sa.text("SHOW superuser_reserved_connections")).scalar_one())
    available = limit - reserved
    message = (
        f"up to {wanted} ({settings.web_concurrency} web x {per_web} (WEB_THREADS, at most "
        f"{_PER_PROCESS} pooled), + {_WORKER_PROCESSES} worker x {_PER_PROCESS}) of "
        f"max_connections {limit} "
        f"({reserved} reserved)"
    )
    fix = "lower WEB_CONCURRENCY or WEB_THREADS, or use a plan with more connections (or a pooler)"
    if wanted > available:
        return Check("connections", "fail", message, fix)
    if wanted > 0.8 * available:
        return Check("connections", "warn", message, fix)
    return Check("connections", "ok", message)


def check_ittybit(client: IttybitClient) -> tuple[Check, datetime | None]:
    """Check the API answers this key; return the newest listed event's time too."""
    try:
        page = client.list_events(limit=1, order=None)
    except AuthError as exc:
        fix = "check ITTYBIT_API_KEY (and ITTYBIT_API_URL)"
        return Check("ittybit", "fail", f"refused the key (HTTP {exc.status})", fix), None
    except ApiError as exc:
        if exc.status in _NO_RESOURCE:
            return Check("ittybit", "ok", f"reachable at {client.base_url}; no event list"), None
        return Check("ittybit", "fail", exc.message, "check ITTYBIT_API_URL"), None
    newest = page.events[0].created_at if page.events else None
    return Check("ittybit", "ok", f"reachable at {client.base_url} with this key"), newest


def check_endpoint(client: IttybitClient, settings: Settings) -> Check:
    """Check the project-level endpoint is registered, active, and its secret set here."""
    url = settings.public_url.rstrip("/") + "/webhooks/ittybit"
    connect = "run `jobhooks ittybit connect`"
    try:
        endpoints = client.list_endpoints()
    except ApiError as exc:
        if exc.status in _NO_RESOURCE:
            return Check("endpoint", "ok", "no endpoint resource: per-job webhook URLs are used")
        return Check("endpoint", "fail", exc.message, "check ITTYBIT_API_KEY and ITTYBIT_API_URL")
    found = next((item for item in endpoints if item.url == url), None)
    if found is None:
        return Check("endpoint", "fail", f"none registered for {url}", connect)
    if found.status != "active":
        fix = f"reactivate it on ittybit, or {connect}"
        return Check("endpoint", "fail", f"{found.id} for {url} is {found.status}", fix)
    if not settings.webhook_secrets:
        fix = "set ITTYBIT_WEBHOOK_SECRET to the endpoint's whsec_ secret"
        return Check("endpoint", "fail", f"{found.id} is active but no secret is set", fix)
    return Check("endpoint", "ok", f"{found.id} for {url} is active")


def check_arrivals(engine: Engine, newest_event: datetime | None, settings: Settings) -> Check:
    """Compare the last webhook received with the newest event ittybit lists."""
    with engine.connect() as conn:
        last = conn.execute(
            sa.select(sa.func.max(_inbox.c.received_at)).where(
                _inbox.c.source.in_(("url", "endpoint"))
            )
        ).scalar()
    seen = f"last webhook {_ago(last)}, newest listed event {_ago(newest_event)}"
    fix = "check `jobhooks ittybit endpoints`, ITTYBIT_WEBHOOK_SECRET and PUBLIC_URL"
    if newest_event is None:
        return Check("webhooks", "ok", seen)
    window = timedelta(seconds=settings.webhook_silence_after)
    if last is None or newest_event - last > window:
        return Check("webhooks", "warn", f"{seen}: webhooks are behind the list", fix)
    return Check("webhooks", "ok", seen)


def check_notifications(engine: Engine, settings: Settings) -> Check:
    """Judge the notification endpoints' health, and count the notifications given up on."""
    with engine.connect() as conn:
        endpoints = list_endpoints(conn)
        dead = conn.execute(
            sa.select(sa.func.count()).where(
                _notifications.c.status == NotificationStatus.DEAD.value
            )
        ).scalar_one()
    if not endpoints and not settings.notify_urls:
        return Check("notifications", "ok", "no notification endpoint (`jobhooks endpoints add`)")
    disabled = [e.id for e in endpoints if e.status != "active"]
    failing = [e.id for e in endpoints if e.status == "active" and e.failing_since is not None]
    if disabled:
        fix = "fix the application's endpoint, then `jobhooks endpoints enable ID`"
        return Check("notifications", "fail", f"disabled: {', '.join(disabled)}", fix)
    if failing:
        fix = "see `jobhooks endpoints show ID` and `jobhooks notify attempts ID`"
        return Check("notifications", "warn", f"failing: {', '.join(failing)}", fix)
    if dead:
        fix = "fix the application's endpoint, then `jobhooks notify retry --dead`"
        return Check("notifications", "warn", f"{dead} notification(s) given up", fix)
    return Check("notifications", "ok", f"{len(endpoints)} endpoint(s) active, none given up")


def _ago(when: datetime | None) -> str:
    if when is None:
        return "never"
    seconds = max(0, int((utcnow() - when).total_seconds()))
    return f"{seconds}s ago" if seconds < 120 else f"{seconds // 60}m ago"


def run_checks(app: Flask, emit: Callable[[Check], None]) -> None:
    """Run every check in order, emitting each line as it is known."""
    settings: Settings = app.extensions["jobhooks.settings"]
    emit(check_settings(settings))
    engine = get_engine(app)
    database = check_database(engine, settings)
    for check in database:
        emit(check)
    with client_from_settings(settings, max_connections=1) as client:
        ittybit, newest = check_ittybit(client)
        emit(ittybit)
        if ittybit.level != "fail":
            emit(check_endpoint(client, settings))
    if database[0].level == "fail":
        return
    if ittybit.level != "fail":
        emit(check_arrivals(engine, newest, settings))
    if all(check.level != "fail" for check in database):  # its tables are there
        emit(check_notifications(engine, settings))


@click.command("doctor")
@click.pass_context
def doctor_command(ctx: click.Context) -> None:
    """Check settings, database, ittybit, the endpoint, webhooks and notifications."""
    loaded = _load(ctx)
    failed = False

    def emit(check: Check) -> None:
        nonlocal failed
        failed = failed or check.level == "fail"
        click.echo(check.line())

    if isinstance(loaded, Check):
        emit(loaded)
    else:
        with loaded.app_context():
            run_checks(loaded, emit)
    ctx.exit(1 if failed else 0)
