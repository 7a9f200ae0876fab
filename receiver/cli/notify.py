"""``jobhooks notify``: deliver the outbox, list it, retry what died, send a test.

``notify`` alone sends what is due once; ``notify --loop`` keeps sending until SIGTERM
(the ``worker`` does the same on a thread of its own). Exit codes: 0 done, 1 a
notification could not be delivered (or a test failed), 2 bad arguments or configuration.
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import datetime
from typing import Any

import click

from receiver.cli.common import (
    ConfigurationError,
    Duration,
    Since,
    database_errors,
    echo_json,
    echo_table,
    settings,
    with_app,
)
from receiver.cli.reconcile import stop_on_signals
from receiver.core.statuses import NotificationStatus
from receiver.flows.endpoints import EndpointError, get_endpoint, list_endpoints, signing_keys
from receiver.flows.outbox import (
    TEST_EVENT_TYPE,
    endpoint_label,
    list_attempts,
    list_notifications,
    new_message_id,
    replay_endpoint,
    retry_dead_notifications,
    retry_notifications,
)
from receiver.observe.logs import configure_logging
from receiver.observe.metrics import get_metrics
from receiver.store.engines import get_engine, get_read_engine
from receiver.store.models import utcnow
from reconcile.notifier import Notifier, send_notification
from reconcile.notify_limits import DELIVERY_TIMEOUT, LEASE_SECONDS

__all__ = ["notify_cli"]

_STATUSES = [status.value for status in NotificationStatus]


def _active_endpoints() -> list[Any]:
    """Return the active endpoints; refuse when there is none (nowhere to send)."""
    with database_errors(), get_read_engine().connect() as conn:
        active = [row for row in list_endpoints(conn) if row.status == "active"]
    if not active:
        message = (
            "no active endpoint: notifications have nowhere to go "
            "(set NOTIFY_URL or run `jobhooks endpoints add URL`)"
        )
        raise ConfigurationError(message)
    return active


@click.group("notify", invoke_without_command=True)
@click.option("--loop", is_flag=True, help="Keep sending until SIGTERM.")
@click.option(
    "--lease",
    type=Duration(positive=True),
    default=LEASE_SECONDS,
    show_default="60s",
    help="How long a claim on a notification lasts; a crashed sender's rows go out again "
    f"after it. Longer than an attempt ({DELIVERY_TIMEOUT:g}s).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the tally as JSON.")
@click.pass_context
def notify_cli(ctx: click.Context, loop: bool, lease: float, as_json: bool) -> None:
    """Send the notifications due to your application's endpoints, signed.

    Without a subcommand: send what is due now, once, or with --loop until SIGTERM.
    Exit status 1 if one could not be delivered (it is retried later).
    """
    # The group's own work needs the app; a subcommand (`notify list --help` included)
    # creates it itself, when it runs.
    if ctx.invoked_subcommand is None:
        ctx.invoke(_send_due, loop=loop, lease=lease, as_json=as_json)


@with_app
def _send_due(loop: bool, lease: float, as_json: bool) -> None:
    config = settings()
    _active_endpoints()
    if lease <= DELIVERY_TIMEOUT:
        message = f"must be longer than an attempt may take ({DELIVERY_TIMEOUT:g}s)"
        raise click.BadParameter(message, param_hint="--lease")
    stop = threading.Event()
    with Notifier.from_settings(
        get_engine(), config, stop=stop, metrics=get_metrics(), lease_seconds=lease
    ) as notifier:
        if loop:
            configure_logging(level=config.log_level, fmt=config.log_format, stream=sys.stdout)
            with stop_on_signals(stop):
                notifier.run_forever()
            return
        with database_errors():
            tally = notifier.run()
    if as_json:
        echo_json(tally.as_dict())
    else:
        click.echo(
            f"notify: {tally.delivered} delivered, {tally.failed} failed (retried later), "
            f"{tally.dead} dead, in {tally.seconds:.1f}s"
        )
        for problem in tally.problems:
            click.echo(
                f"  {problem['outcome']}: notification {problem['id']} "
                f"({problem['submission_id']}) to {problem['endpoint']}: {problem['error']}",
                err=True,
            )
    if not tally.ok:
        sys.exit(1)


_TABLE = (
    ("ID", "id", 7),
    ("CREATED (UTC)", "created_at", 19),
    ("STATUS", "status", 9),
    ("TYPE", "event_type", 22),
    ("SUBMISSION", "submission_id", 24),
    ("TRIES", "attempts", 5),
    ("LAST", "last", 24),
    ("NEXT / DELIVERED (UTC)", "when", 22),
    ("WEBHOOK-ID", "message_id", 28),
    ("ENDPOINT", "endpoint", 50),
)


def _listed(row: dict[str, Any]) -> dict[str, Any]:
    """Return a listed notification as printed: its endpoint without a query string."""
    return {**row, "endpoint": endpoint_label(row["endpoint"])}


def _json(row: dict[str, Any]) -> dict[str, Any]:
    """Return a listed notification for JSON: times in ISO 8601."""
    return {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in row.items()
    }


@notify_cli.command("list")
@click.option("--status", type=click.Choice(_STATUSES), default=None, help="Only this status.")
@click.option("--submission", "submission_id", default=None, help="Only this submission.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@with_app
def notify_list(status: str | None, submission_id: str | None, limit: int, as_json: bool) -> None:
    """List notifications, newest first, without their bodies."""
    with database_errors(), get_read_engine().connect() as conn:
        rows = [
            _listed(row)
            for row in list_notifications(
                conn, status=status, submission_id=submission_id, limit=limit
            )
        ]
    if as_json:
        for row in rows:
            echo_json(_json(row))
        return
    if not rows:
        click.echo("no notifications match", err=True)
        return
    echo_table(_TABLE, (_shown(row) for row in rows))


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    """A notification row with the table's two derived columns."""
    return {
        **row,
        "last": row["last_status"] or row["last_error"],
        "when": row["delivered_at"]
        if row["status"] == NotificationStatus.DELIVERED.value
        else row["next_attempt_at"]
        if row["status"] == NotificationStatus.PENDING.value
        else None,
    }


@notify_cli.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--dead", "all_dead", is_flag=True, help="Every dead notification.")
@with_app
def notify_retry(ids: tuple[int, ...], all_dead: bool) -> None:
    """Send notifications again from now on: the named ones (ID…) or every --dead one.

    Delivered ones are left alone. A retried one that fails again, past NOTIFY_MAX_AGE,
    is dead again at once: fix the endpoint first (`notify test`).
    """
    if not ids and not all_dead:
        message = (
            "give notification ids (see `jobhooks notify list --status dead`), "
            "or --dead for every dead one"
        )
        raise click.UsageError(message)
    if ids and all_dead:
        raise click.UsageError("give notification ids or --dead, not both")
    now = utcnow()
    with database_errors(), get_engine().begin() as conn:
        if all_dead:
            count = retry_dead_notifications(conn, now=now)
        else:
            count = retry_notifications(conn, list(dict.fromkeys(ids)), now=now)
    click.echo(f"{count} notification(s) will be sent at the next look (within a second)")
    skipped = len(set(ids)) - count
    if ids and skipped:
        click.echo(f"{skipped} left alone: already delivered, or no such notification", err=True)
        sys.exit(1)


@notify_cli.command("test")
@with_app
def notify_test() -> None:
    """Send a signed notification.test to every active endpoint now; show each answer.

    Nothing is stored. Exit status 1 if an endpoint did not answer 2xx in time.
    """
    config = settings()
    failed = 0
    with Notifier.from_settings(get_engine(), config) as notifier:
        for endpoint in _active_endpoints():
            now = utcnow()
            message_id = new_message_id()
            body = {
                "type": TEST_EVENT_TYPE,
                "timestamp": now.isoformat(),
                "data": {"message": "a test notification from jobhooks"},
            }
            attempt = send_notification(
                notifier.client,
                endpoint.url,
                json.dumps(body, separators=(",", ":")).encode(),
                msg_id=message_id,
                keys=signing_keys(endpoint, now=now),
                now=now,
            )
            answer = attempt.status if attempt.error is None else attempt.error
            click.echo(
                f"POST {endpoint_label(endpoint.url)} ({message_id}): {answer} "
                f"in {attempt.seconds:.2f}s [{endpoint.id}]"
            )
            failed += attempt.error is not None
    if failed:
        sys.exit(1)


@notify_cli.command("attempts")
@click.argument("notification_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@with_app
def notify_attempts(notification_id: int, as_json: bool) -> None:
    """List the attempts to deliver one notification: when, answer, time, answer's start."""
    with database_errors(), get_read_engine().connect() as conn:
        rows = list_attempts(conn, notification_id)
    if as_json:
        for row in rows:
            echo_json(_json(row))
        return
    if not rows:
        click.echo(f"no attempts recorded for notification {notification_id}", err=True)
        return
    for row in rows:
        answer = row["status_code"] if row["status_code"] is not None else row["error"]
        click.echo(
            f"{row['attempted_at'].isoformat()[:23]}  {answer}  {row['seconds']:.3f}s  "
            f"{(row['response'] or '')[:200]!r}"
        )


@notify_cli.command("replay")
@click.option("--endpoint", "endpoint_id", required=True, help="The endpoint (ep_…).")
@click.option("--since", type=Since(), required=True, help="A duration ago (2h) or a time.")
@click.option("--status", type=click.Choice(_STATUSES), default=None, help="Only this status.")
@with_app
def notify_replay(endpoint_id: str, since: datetime, status: str | None) -> None:
    """Send an endpoint's notifications since then again, in order, with the same webhook-id."""
    try:
        with database_errors(), get_engine().begin() as conn:
            get_endpoint(conn, endpoint_id)
            count = replay_endpoint(conn, endpoint_id, since=since, now=utcnow(), status=status)
    except EndpointError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(
        f"{count} notification(s) to {endpoint_id} will be sent again, in order, "
        "with their webhook-id"
    )
