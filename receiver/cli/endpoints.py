"""``jobhooks endpoints``: the application's notification endpoints, as records.

Each endpoint has its own ``whsec_`` secret (shown once: when it is made and when it is
rotated), the event types it takes, and a status. Exit codes: 0 done, 1 no such endpoint
or a refused value, 2 bad arguments.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from receiver.cli.common import database_errors, echo_json, echo_table, settings, with_app
from receiver.flows.endpoints import (
    ROTATION_OVERLAP,
    EndpointError,
    add_endpoint,
    disable_endpoint,
    enable_endpoint,
    endpoint_json,
    get_endpoint,
    list_endpoints,
    parse_event_types,
    remove_endpoint,
    rotate_secret,
)
from receiver.flows.outbox import endpoint_label
from receiver.store.engines import get_engine, get_read_engine
from receiver.store.models import utcnow

__all__ = ["endpoints_cli"]


def _refused(exc: EndpointError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


@click.group("endpoints")
def endpoints_cli() -> None:
    """Add, list, disable, enable, rotate and remove notification endpoints."""


@endpoints_cli.command("add")
@click.argument("url")
@click.option("--events", default="*", show_default=True, help="Types it takes, comma-separated.")
@click.option("--secret", default=None, help="Its whsec_ secret (default: 24 random bytes).")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Requests a second at most.",
)
@click.option("--description", default=None, help="What it is for.")
@click.option("--json", "as_json", is_flag=True, help="Print the endpoint as JSON.")
@with_app
def endpoints_add(
    url: str,
    events: str,
    secret: str | None,
    rate: float | None,
    description: str | None,
    as_json: bool,
) -> None:
    """Add an endpoint for URL; print it with its secret (shown this once)."""
    try:
        with database_errors(), get_engine().begin() as conn:
            endpoint = add_endpoint(
                conn,
                url,
                now=utcnow(),
                event_types=parse_event_types(events),
                secret=secret,
                rate=rate,
                description=description,
            )
    except EndpointError as exc:
        _refused(exc)
        return
    if as_json:
        echo_json(endpoint)
        return
    click.echo(f"{endpoint['id']}  {endpoint_label(url)}  {','.join(endpoint['event_types'])}")
    click.echo(f"secret: {endpoint['secret']}  (shown once: give it to the application now)")


_TABLE = (
    ("ID", "id", 28),
    ("STATUS", "status", 9),
    ("HEALTH", "health", 28),
    ("EVENTS", "events", 30),
    ("URL", "url", 50),
)


def _health(item: dict[str, Any]) -> str:
    if item["status"] == "disabled":
        return f"disabled: {item['disabled_reason'] or ''}"
    if item["failing_since"]:
        return f"failing since {item['failing_since'][:19]}"
    return "up"


@endpoints_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@with_app
def endpoints_list(as_json: bool) -> None:
    """List the endpoints with their status and health (never their secrets)."""
    with database_errors(), get_read_engine().connect() as conn:
        items = [endpoint_json(row) for row in list_endpoints(conn)]
    if as_json:
        for item in items:
            echo_json(item)
        return
    if not items:
        click.echo("no endpoints: add one with `jobhooks endpoints add URL`", err=True)
        return
    echo_table(
        _TABLE,
        (
            {
                **item,
                "health": _health(item),
                "events": ",".join(item["event_types"]),
                "url": endpoint_label(item["url"]),
            }
            for item in items
        ),
    )


@endpoints_cli.command("show")
@click.argument("endpoint_id")
@with_app
def endpoints_show(endpoint_id: str) -> None:
    """Print one endpoint as JSON (never its secret)."""
    try:
        with database_errors(), get_read_engine().connect() as conn:
            echo_json(endpoint_json(get_endpoint(conn, endpoint_id)))
    except EndpointError as exc:
        _refused(exc)


@endpoints_cli.command("disable")
@click.argument("endpoint_id")
@click.option("--reason", default="disabled by hand", show_default=True)
@with_app
def endpoints_disable(endpoint_id: str, reason: str) -> None:
    """Disable an endpoint: its notifications are kept, not sent, until it is enabled."""
    try:
        with database_errors(), get_engine().begin() as conn:
            changed = disable_endpoint(conn, endpoint_id, reason=reason, now=utcnow())
    except EndpointError as exc:
        _refused(exc)
        return
    click.echo(f"{endpoint_id} {'disabled' if changed else 'was already disabled'}")


@endpoints_cli.command("enable")
@click.argument("endpoint_id")
@with_app
def endpoints_enable(endpoint_id: str) -> None:
    """Enable an endpoint; its waiting notifications go out, oldest first per submission.

    Those older than NOTIFY_MAX_AGE are made dead instead, and listed.
    """
    try:
        with database_errors(), get_engine().begin() as conn:
            resumed, dead = enable_endpoint(
                conn, endpoint_id, now=utcnow(), max_age=settings().notify_max_age
            )
    except EndpointError as exc:
        _refused(exc)
        return
    click.echo(f"{endpoint_id} enabled: {resumed} waiting notification(s) resume")
    if dead:
        click.echo(f"{len(dead)} older than NOTIFY_MAX_AGE made dead:", err=True)
        for item in dead:
            click.echo(
                f"  {item['id']}  {item['created_at'][:19]}  {item['event_type']}  "
                f"{item['submission_id']}",
                err=True,
            )


@endpoints_cli.command("rotate-secret")
@click.argument("endpoint_id")
@click.option("--secret", default=None, help="The new whsec_ secret (default: 24 random bytes).")
@with_app
def endpoints_rotate(endpoint_id: str, secret: str | None) -> None:
    """Give an endpoint a new secret; the old one keeps signing beside it for 24 hours."""
    try:
        with database_errors(), get_engine().begin() as conn:
            fresh = rotate_secret(conn, endpoint_id, now=utcnow(), secret=secret)
    except EndpointError as exc:
        _refused(exc)
        return
    hours = ROTATION_OVERLAP.total_seconds() / 3600
    click.echo(f"secret: {fresh}  (shown once; the old one also signs for {hours:g} h)")


@endpoints_cli.command("remove")
@click.argument("endpoint_id")
@with_app
def endpoints_remove(endpoint_id: str) -> None:
    """Remove an endpoint; its pending notifications are dropped (and counted)."""
    try:
        with database_errors(), get_engine().begin() as conn:
            dropped = remove_endpoint(conn, endpoint_id)
    except EndpointError as exc:
        _refused(exc)
        return
    click.echo(f"{endpoint_id} removed; {dropped} pending notification(s) dropped")
