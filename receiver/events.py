"""The inbox from the command line: list, show, replay and prune stored deliveries.

``flask --app wsgi events …`` lets whoever is on call see what the service did with each
delivery and put it right without a database shell. Replaying goes through the same
``apply_job_state`` as a live delivery, so it is idempotent: a state already recorded
comes back ``duplicate`` and changes nothing.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import sqlalchemy as sa
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import Connection
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from config.settings import parse_duration
from receiver.apply import apply_job_state
from receiver.cli import database_errors, echo_json
from receiver.db import get_engine
from receiver.deliveries import match_stored
from receiver.inbox import set_outcome
from receiver.jobstate import InvalidPayload, NotAJob, normalise, parse_json
from receiver.models import Outcome, WebhookEvent, utcnow
from receiver.transitions import decide_transition
from reconcile.rematch import rematch_event, rematch_unmatched

__all__ = [
    "ReplayError",
    "Replayed",
    "count_prunable",
    "event_json",
    "get_event",
    "init_app",
    "list_events",
    "parse_since",
    "prune_events",
    "replay_event",
]

_events = WebhookEvent.__table__  # type: ignore[attr-defined]
_SUMMARY_COLUMNS = (
    "id",
    "received_at",
    "source",
    "outcome",
    "submission_id",
    "job_id",
    "provider_status",
    "delivery_id",
    "reason",
)
_OUTCOMES = [outcome.value for outcome in Outcome]


class ReplayError(Exception):
    """An event cannot be replayed; the message says why."""


@dataclass(frozen=True, slots=True)
class Replayed:
    """What replaying one event did (or, in a dry run, would do)."""

    event_id: int
    previous: str
    outcome: str
    submission_id: str | None
    status: str | None
    reason: str | None
    changed: bool


def parse_since(text: str, *, now: datetime) -> datetime:
    """Return the time ``text`` names: a duration ago (``2h``, ``7d``) or an ISO-8601 time."""
    try:
        return now - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        message = f"{text!r} is neither a duration (30m, 2h, 7d) nor an ISO-8601 time"
        raise ValueError(message) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def list_events(
    conn: Connection,
    *,
    outcomes: Sequence[str] = (),
    submission_id: str | None = None,
    job_id: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Return the newest events matching every filter given, newest first, without bodies."""
    query = sa.select(*(_events.c[name] for name in _SUMMARY_COLUMNS))
    if outcomes:
        query = query.where(_events.c.outcome.in_(list(outcomes)))
    if submission_id is not None:
        query = query.where(_events.c.submission_id == submission_id)
    if job_id is not None:
        query = query.where(_events.c.job_id == job_id)
    if since is not None:
        query = query.where(_events.c.received_at >= since)
    query = query.order_by(_events.c.id.desc()).limit(limit)
    return [dict(row._mapping) for row in conn.execute(query)]


def get_event(conn: Connection, event_id: int) -> dict[str, Any] | None:
    """Return one event with its body and stored headers, or None."""
    row = conn.execute(sa.select(_events).where(_events.c.id == event_id)).first()
    return None if row is None else dict(row._mapping)


def event_json(event: dict[str, Any]) -> dict[str, Any]:
    """Return an event as plain JSON values; a body that is JSON is shown as JSON."""
    shown = dict(event)
    for key, value in shown.items():
        if isinstance(value, datetime):
            shown[key] = value.isoformat()
    if "body" in shown:
        with contextlib.suppress(ValueError):
            shown["body"] = json.loads(shown["body"])
    return shown


def replay_event(conn: Connection, event_id: int, *, now: datetime, write: bool = True) -> Replayed:
    """Apply one stored delivery again, inside the caller's transaction.

    An ``unmatched`` event goes through the reconciler's re-matching and takes its new
    outcome. Any other event is applied to its submission as it would be now; a
    ``rejected`` one that now passes takes the new outcome, the others keep the outcome
    recorded when they arrived. Raise ReplayError when it cannot be replayed.
    """
    row = conn.execute(
        sa.select(
            _events.c.outcome,
            _events.c.source,
            _events.c.submission_id,
            _events.c.body,
            _events.c.claimed_user_id,
        )
        .where(_events.c.id == event_id)
        .with_for_update()
    ).first()
    if row is None:
        message = f"no event {event_id}"
        raise ReplayError(message)
    previous, source, wanted, body, claimed_user_id = row
    if previous == Outcome.UNMATCHED.value:
        return _rematch(conn, event_id, now=now, write=write)
    if previous == Outcome.REJECTED.value and source == "url" and claimed_user_id is None:
        message = (
            f"event {event_id} was rejected on a signed webhook URL before its owner was "
            "stored, so it cannot be checked again: fix the cause and let ittybit resend it"
        )
        raise ReplayError(message)
    try:
        state = normalise(parse_json(body.encode("utf-8")))
    except (InvalidPayload, NotAJob) as exc:
        message = f"event {event_id} can no longer be read: {exc}"
        raise ReplayError(message) from None
    submission, conflict = match_stored(
        conn, state, source=source, wanted=wanted, claimed_user_id=claimed_user_id
    )
    if submission is None:
        return Replayed(
            event_id,
            previous,
            Outcome.UNMATCHED.value,
            wanted,
            None,
            "no submission matches",
            False,
        )
    if conflict is not None:
        return Replayed(
            event_id,
            previous,
            Outcome.REJECTED.value,
            submission.submission_id,
            None,
            conflict,
            False,
        )
    change = apply_job_state(conn, submission, state, now=now) if write else None
    if change is None:
        change = decide_transition(submission, state)
    if write and previous == Outcome.REJECTED.value:
        set_outcome(
            conn,
            event_id,
            outcome=change.outcome,
            reason=f"replayed: {change.reason or change.outcome.value}",
            submission_id=submission.submission_id,
        )
    status = change.values.get("status", submission.status) if change.values else None
    return Replayed(
        event_id,
        previous,
        change.outcome.value,
        submission.submission_id,
        str(status or submission.status),
        change.reason,
        write and change.values is not None,
    )


def _rematch(conn: Connection, event_id: int, *, now: datetime, write: bool) -> Replayed:
    try:
        outcome = rematch_event(conn, event_id, now=now, write=write)
    except (InvalidPayload, NotAJob) as exc:
        message = f"event {event_id} can no longer be read: {exc}"
        raise ReplayError(message) from None
    after = conn.execute(
        sa.select(_events.c.submission_id, _events.c.reason).where(_events.c.id == event_id)
    ).one()
    if outcome is None:
        reason = "no submission matches the job yet"
        return Replayed(
            event_id,
            Outcome.UNMATCHED.value,
            Outcome.UNMATCHED.value,
            after[0],
            None,
            reason,
            False,
        )
    return Replayed(
        event_id,
        Outcome.UNMATCHED.value,
        outcome.value,
        after[0],
        None,
        after[1] if write else None,
        write and outcome is Outcome.APPLIED,
    )


def replay_one(engine: Engine, event_id: int, *, now: datetime, dry_run: bool) -> Replayed:
    """Replay one event in a transaction of its own (rolled back in a dry run)."""
    try:
        with engine.connect() as conn, conn.begin() as transaction:
            result = replay_event(conn, event_id, now=now, write=not dry_run)
            if dry_run:
                transaction.rollback()
            return result
    except IntegrityError:
        message = f"event {event_id}: its job id belongs to another submission"
        raise ReplayError(message) from None


def _prunable(before: datetime) -> tuple[Any, Any]:
    """Return (alias, condition) selecting old events that are not their submission's latest."""
    event = _events.alias("event")
    newer = _events.alias("newer")
    latest = (
        sa.select(sa.func.max(newer.c.id))
        .where(newer.c.submission_id == event.c.submission_id)
        .correlate(event)
        .scalar_subquery()
    )
    condition = sa.and_(
        event.c.received_at < before,
        sa.or_(event.c.submission_id.is_(None), event.c.id < latest),
    )
    return event, condition


def count_prunable(conn: Connection, *, before: datetime) -> int:
    """Return how many events :func:`prune_events` would delete."""
    event, condition = _prunable(before)
    return int(
        conn.execute(sa.select(sa.func.count()).select_from(event).where(condition)).one()[0]
    )


def prune_events(engine: Engine, *, before: datetime, batch: int = 1000) -> int:
    """Delete events received before ``before``, keeping each submission's latest one.

    Deletes ``batch`` rows per transaction, so webhooks keep flowing while it runs.
    """
    event, condition = _prunable(before)
    oldest = sa.select(event.c.id).where(condition).order_by(event.c.id).limit(batch)
    statement = sa.delete(_events).where(_events.c.id.in_(oldest))
    deleted = 0
    while True:
        with engine.begin() as conn:
            count = conn.execute(statement).rowcount
        deleted += count
        if count < batch:
            return deleted


# --- commands ----------------------------------------------------------------------------

events_cli = AppGroup("events", help="List, show, replay and prune stored webhook deliveries.")


class Since(click.ParamType):  # type: ignore[type-arg]
    """A point in time: a duration ago (``2h``, ``7d``) or an ISO-8601 time."""

    name = "since"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_since(str(value), now=utcnow())
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Age(click.ParamType):  # type: ignore[type-arg]
    """A positive duration: ``90s``, ``12h``, ``30d``."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            seconds = parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if seconds <= 0:
            self.fail("must be greater than zero", param, ctx)
        return seconds


def _cell(value: Any, width: int) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, datetime):
        text = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    else:
        text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


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
    with database_errors(), get_engine().connect() as conn:
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
    click.echo("  ".join(title.ljust(width) for title, _, width in _TABLE).rstrip())
    for row in rows:
        click.echo(
            "  ".join(_cell(row[key], width).ljust(width) for _, key, width in _TABLE).rstrip()
        )


@events_cli.command("show")
@click.argument("event_id", type=int)
def events_show(event_id: int) -> None:
    """Print one stored delivery as JSON: what was received and what was done with it."""
    with database_errors(), get_engine().connect() as conn:
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
    if bool(event_ids) == bool(outcome):
        raise click.UsageError("give event ids or --outcome unmatched (not both)")
    engine = get_engine()
    if outcome is not None:
        with database_errors():
            report = rematch_unmatched(engine, now=utcnow(), dry_run=dry_run)
            with engine.connect() as conn:
                waiting = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(_events)
                    .where(_events.c.outcome == Outcome.UNMATCHED.value)
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
                result = replay_one(engine, event_id, now=now, dry_run=dry_run)
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
    type=Age(),
    required=True,
    help="Delete events received longer ago than this, e.g. 30d.",
)
@click.option("--batch", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
def events_prune(older_than: float, batch: int, dry_run: bool) -> None:
    """Delete old deliveries in batches, keeping the latest one of every submission."""
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


def init_app(app: Flask) -> None:
    """Register ``events`` on ``app.cli``."""
    app.cli.add_command(events_cli)
