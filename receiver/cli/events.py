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
from flask.cli import AppGroup

from receiver.cli.common import Duration, Since, database_errors, echo_json, echo_table
from receiver.core.statuses import Outcome

__all__ = ["events_cli"]

_OUTCOMES = [outcome.value for outcome in Outcome]

events_cli = AppGroup("events", help="List, show, replay and prune stored webhook deliveries.")


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
def events_list(
    outcomes: tuple[str, ...],
    submission_id: str | None,
    job_id: str | None,
    since: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """List stored deliveries, newest first."""
    from receiver.flows.history import event_json, list_events
    from receiver.store.engines import get_read_engine

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
def events_show(event_id: int) -> None:
    """Print one stored delivery as JSON: what was received and what was done with it."""
    from receiver.flows.history import event_json, get_event
    from receiver.store.engines import get_read_engine

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
def events_replay(
    event_ids: tuple[int, ...], outcome: str | None, dry_run: bool, as_json: bool
) -> None:
    """Apply stored deliveries again, as if they had just arrived.

    Give event ids, or --outcome unmatched for every delivery that arrived before its
    submission. Safe to repeat. Exit status 1 if an event could not be replayed.
    """
    import sqlalchemy as sa

    from receiver.flows.outbox import get_outbox
    from receiver.flows.replay import ReplayError, rematch_unmatched, replay_one
    from receiver.store.engines import get_engine
    from receiver.store.models import WebhookEvent, utcnow

    if bool(event_ids) == bool(outcome):
        raise click.UsageError("give event ids or --outcome unmatched (not both)")
    events = WebhookEvent.__table__  # type: ignore[attr-defined]
    engine = get_engine()
    if outcome is not None:
        with database_errors():
            report = rematch_unmatched(engine, now=utcnow(), outbox=get_outbox(), dry_run=dry_run)
            with engine.connect() as conn:
                waiting = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(events)
                    .where(events.c.outcome == Outcome.UNMATCHED.value)
                ).scalar_one()
        summary = {
            "matched": report.matched,
            "rejected": report.rejected,
            "errors": report.errors,
            "still_unmatched": waiting,
            "dry_run": dry_run,
        }
        if as_json:
            echo_json(summary)
        else:
            prefix = "dry run (nothing written): " if dry_run else ""
            click.echo(
                f"{prefix}matched {report.matched}, rejected {report.rejected}, "
                f"unreadable {report.errors}; {waiting} still unmatched"
            )
        if report.errors:
            raise SystemExit(1)
        return
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
            continue
        if result.outcome == result.previous and not result.changed:
            what = f"still {result.outcome}"
        else:
            what = f"was {result.previous}, {'would be' if dry_run else 'now'} {result.outcome}"
        where = ""
        if result.submission_id:
            where = f" ({result.submission_id}" + (f", {result.status})" if result.status else ")")
        detail = f": {result.reason}" if result.reason else ""
        click.echo(f"event {event_id}: {what}{where}{detail}")
    if failed:
        raise SystemExit(1)


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
def events_prune(older_than: float, batch: int, dry_run: bool) -> None:
    """Delete old deliveries in batches, keeping the latest one of every submission."""
    from receiver.flows.prune import count_prunable, prune_events
    from receiver.store.engines import get_engine
    from receiver.store.models import utcnow

    before = utcnow() - timedelta(seconds=older_than)
    stamp = f"{before:%Y-%m-%d %H:%M:%S}"
    engine = get_engine()
    with database_errors():
        if dry_run:
            with engine.connect() as conn:
                count = count_prunable(conn, before=before)
            click.echo(f"dry run: would delete {count} event(s) received before {stamp} UTC")
            return
        deleted = prune_events(engine, before=before, batch=batch)
    click.echo(f"deleted {deleted} event(s) received before {stamp} UTC")
