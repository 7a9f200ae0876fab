"""``jobhooks events …``: list, show, replay and prune stored webhook deliveries.

Lets whoever is on call see what the service did with each delivery and put it right
without a database shell. Replaying goes through the same ``apply_job_state`` as a live
delivery, so it is idempotent: a state already recorded comes back ``duplicate``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timedelta

import click
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from receiver.cli.common import (
    Duration,
    Since,
    database_errors,
    echo_json,
    echo_table,
    with_app,
)
from receiver.core.statuses import Outcome
from receiver.flows.history import event_json, get_event, list_events
from receiver.flows.outbox import get_outbox
from receiver.flows.prune import (
    count_prunable,
    count_prunable_attempts,
    prune_attempts,
    prune_events,
)
from receiver.flows.replay import Replayed, ReplayError, rematch_unmatched, replay_one
from receiver.store.engines import get_engine, get_read_engine
from receiver.store.models import WebhookEvent, utcnow

__all__ = ["events_cli"]

_OUTCOMES = [outcome.value for outcome in Outcome]

events_cli = click.Group("events", help="List, show, replay and prune stored webhook deliveries.")


_TABLE = (
    ("ID", "id", 8),
    ("RECEIVED (UTC)", "received_at", 19),
    ("SOURCE", "source", 8),
    ("OUTCOME", "outcome", 9),
    ("SUBMISSION", "submission_id", 24),
    ("JOB", "job_id", 24),
    ("STATUS", "provider_status", 10),
    ("DELIVERY", "delivery_id", 24),
    ("REASON", "reason", 60),
)


@events_cli.command("list")
@click.option(
    "--outcome",
    "outcomes",
    multiple=True,
    type=click.Choice(_OUTCOMES),
    help="Only this outcome (repeatable).",
)
@click.option("--submission", "submission_id", default=None, help="Only this submission.")
@click.option("--job", "job_id", default=None, help="Only this ittybit job.")
@click.option(
    "--since", type=Since(), default=None, help="Received since: 2h, 7d, or an ISO-8601 time."
)
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@with_app
def events_list(
    outcomes: tuple[str, ...],
    submission_id: str | None,
    job_id: str | None,
    since: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """List stored deliveries, newest first."""
    with database_errors(), get_read_engine().connect() as conn:
        rows = list_events(
            conn,
            outcomes=outcomes,
            submission_id=submission_id,
            job_id=job_id,
            since=since,
            limit=limit,
        )
    if as_json:
        for row in rows:
            echo_json(event_json(row))
        return
    if not rows:
        click.echo("no events match", err=True)
        return
    echo_table(_TABLE, rows)


@events_cli.command("show")
@click.argument("event_id", type=int)
@with_app
def events_show(event_id: int) -> None:
    """Print one stored delivery as JSON: what was received and what was done with it."""
    with database_errors(), get_read_engine().connect() as conn:
        event = get_event(conn, event_id)
    if event is None:
        message = f"no event {event_id}"
        raise click.ClickException(message)
    click.echo(json.dumps(event_json(event), indent=2, default=str))


@events_cli.command("replay")
@click.argument("event_ids", nargs=-1, type=int)
@click.option(
    "--outcome",
    type=click.Choice([Outcome.UNMATCHED.value]),
    default=None,
    help="Replay every event kept as unmatched that a submission now answers to.",
)
@click.option("--dry-run", is_flag=True, help="Say what would happen; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@with_app
def events_replay(
    event_ids: tuple[int, ...], outcome: str | None, dry_run: bool, as_json: bool
) -> None:
    """Apply stored deliveries again, as if they had just arrived.

    Give event ids, or --outcome unmatched for every delivery that arrived before its
    submission. Safe to repeat. Exit status 1 if an event could not be replayed.
    """
    if bool(event_ids) == bool(outcome):
        raise click.UsageError("give event ids or --outcome unmatched (not both)")
    if outcome is not None:
        ok = _rematch_unmatched(get_engine(), dry_run=dry_run, as_json=as_json)
    else:
        ok = _replay_events(get_engine(), event_ids, dry_run=dry_run, as_json=as_json)
    if not ok:
        raise SystemExit(1)


def _rematch_unmatched(engine: Engine, *, dry_run: bool, as_json: bool) -> bool:
    """Replay every unmatched event a submission now answers to; False if one was unreadable."""
    events = WebhookEvent.__table__  # type: ignore[attr-defined]
    with database_errors():
        report = rematch_unmatched(engine, now=utcnow(), outbox=get_outbox(), dry_run=dry_run)
        with engine.connect() as conn:
            waiting = conn.execute(
                sa.select(sa.func.count())
                .select_from(events)
                .where(events.c.outcome == Outcome.UNMATCHED.value)
            ).scalar_one()
    if as_json:
        echo_json(
            {
                "matched": report.matched,
                "rejected": report.rejected,
                "errors": report.errors,
                "still_unmatched": waiting,
                "dry_run": dry_run,
            }
        )
    else:
        prefix = "dry run (nothing written): " if dry_run else ""
        click.echo(
            f"{prefix}matched {report.matched}, rejected {report.rejected}, "
            f"unreadable {report.errors}; {waiting} still unmatched"
        )
    return not report.errors


def _replay_events(
    engine: Engine, event_ids: tuple[int, ...], *, dry_run: bool, as_json: bool
) -> bool:
    """Replay the named events, one line each; False if one could not be replayed."""
    failed = False
    now = utcnow()
    for event_id in event_ids:
        try:
            with database_errors():
                result = replay_one(engine, event_id, now=now, outbox=get_outbox(), dry_run=dry_run)
        except ReplayError as exc:
            failed = True
            if as_json:
                echo_json({"event_id": event_id, "error": str(exc)})
            else:
                click.echo(f"event {event_id}: {exc}", err=True)
            continue
        if as_json:
            echo_json({**asdict(result), "dry_run": dry_run})
        else:
            click.echo(f"event {event_id}: {_replayed(result, dry_run=dry_run)}")
    return not failed


def _replayed(result: Replayed, *, dry_run: bool) -> str:
    """Say what replaying one event did (or would do)."""
    if result.outcome == result.previous and not result.changed:
        what = f"still {result.outcome}"
    else:
        what = f"was {result.previous}, {'would be' if dry_run else 'now'} {result.outcome}"
    where = ""
    if result.submission_id:
        where = f" ({result.submission_id}" + (f", {result.status})" if result.status else ")")
    detail = f": {result.reason}" if result.reason else ""
    return f"{what}{where}{detail}"


@events_cli.command("prune")
@click.option(
    "--older-than",
    "older_than",
    type=Duration(positive=True),
    required=True,
    help="Delete events received longer ago than this, e.g. 30d.",
)
@click.option("--batch", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@with_app
def events_prune(older_than: float, batch: int, dry_run: bool) -> None:
    """Delete old deliveries in batches, keeping the latest one of every submission."""
    before = utcnow() - timedelta(seconds=older_than)
    stamp = f"{before:%Y-%m-%d %H:%M:%S}"
    engine = get_engine()
    with database_errors():
        if dry_run:
            with engine.connect() as conn:
                count = count_prunable(conn, before=before)
                attempts = count_prunable_attempts(conn, before=before)
            click.echo(
                f"dry run: would delete {count} event(s) received before {stamp} UTC "
                f"and {attempts} notification attempt(s) made before then"
            )
            return
        deleted = prune_events(engine, before=before, batch=batch)
        attempts = prune_attempts(engine, before=before, batch=batch)
    click.echo(
        f"deleted {deleted} event(s) received before {stamp} UTC "
        f"and {attempts} notification attempt(s) made before then"
    )
