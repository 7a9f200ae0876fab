"""Command line: ``flask --app wsgi submit …`` and ``flask --app wsgi reconcile …``.

Exit codes: 0 done, 1 a job (or the submit) failed, 2 bad arguments or configuration.
"""

from __future__ import annotations

import json
import logging
import secrets
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import FrameType
from typing import Any

import click
from flask import Flask
from flask.cli import with_appcontext
from sqlalchemy.exc import SQLAlchemyError

from config.settings import Settings, parse_duration
from receiver.cli import database_errors, echo_json, parse_pairs, settings
from receiver.db import get_engine
from receiver.logs import configure_logging
from receiver.metrics import get_metrics
from receiver.models import utcnow
from receiver.submissions import InvalidSubmission, submission_json
from reconcile.claims import count_stuck
from reconcile.client import client_from_settings
from reconcile.poller import PassOptions, Reconciler, Summary
from reconcile.submit import RESERVED_METADATA, submit_job

__all__ = ["init_app", "reconcile_command", "submit_command"]

log = logging.getLogger(__name__)

_SUMMARY_ROWS = (
    ("checked", "jobs fetched from ittybit"),
    ("updated", "state changed"),
    ("unchanged", "still running, or already recorded"),
    ("failed", "now failed (404 included)"),
    ("expired", "given up: no final state in time"),
    ("errors", "could not be checked; retried later"),
    ("deferred", "rate limited; retried after Retry-After"),
    ("skipped", "named but not polled (no job yet, or leased)"),
    ("rematched", "unmatched webhooks applied to their submission"),
    ("rejected_events", "unmatched webhooks refused on matching"),
    ("unsubmitted", "pending with no job: run submit"),
)


class ConfigurationError(click.ClickException):
    """A setting the command needs is missing: one line, exit status 2."""

    exit_code = 2


class Duration(click.ParamType):  # type: ignore[type-arg]
    """A duration option: ``90``, ``30s``, ``15m``, ``2h``, ``1d``."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def require_api(settings: Settings) -> None:
    """Refuse to start without an API key, naming the variable."""
    if not settings.ittybit_api_key:
        message = "configuration error: ITTYBIT_API_KEY: required by submit and reconcile"
        raise ConfigurationError(message)


def _json_or_text(value: str) -> Any:
    """Read ``1280``, ``true`` or ``[1,2]`` as JSON; anything else stays text."""
    try:
        return json.loads(value)
    except ValueError:
        return value


@click.command("submit")
@click.option("--input", "input_url", required=True, help="URL of the video to process.")
@click.option("--user-id", required=True, help="The owner of the submission.")
@click.option(
    "--submission-id", default=None, help="Create or reuse this submission [default: a new id]."
)
@click.option("--kind", default="video", show_default=True, help="The ittybit job kind.")
@click.option(
    "--option",
    "job_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A job option (repeatable); values that parse as JSON are sent as JSON.",
)
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Extra metadata (repeatable).")
@with_appcontext
def submit_command(
    input_url: str,
    user_id: str,
    submission_id: str | None,
    kind: str,
    job_options: tuple[str, ...],
    meta: tuple[str, ...],
) -> None:
    """Create an ittybit job for a submission and print the submission as JSON.

    Creates the submission, or reuses it when --submission-id exists. On an API
    failure it stays pending with the error; running the same command again
    completes it without ever creating a second job.
    """
    config = settings()
    require_api(config)
    metadata = parse_pairs(meta, "--meta")
    reserved = RESERVED_METADATA & set(metadata)
    if reserved:
        message = f"{', '.join(sorted(reserved))} is set from the submission"
        raise click.BadParameter(message, param_hint="--meta")
    options = {
        key: _json_or_text(value) for key, value in parse_pairs(job_options, "--option").items()
    }
    if submission_id is None:
        submission_id = f"sub_{secrets.token_hex(10)}"
    with database_errors(), client_from_settings(config, max_connections=1) as client:
        try:
            result = submit_job(
                get_engine(),
                client,
                config,
                submission_id=submission_id,
                user_id=user_id,
                input_url=input_url,
                kind=kind,
                options=options,
                metadata=metadata,
                now=utcnow(),
            )
        except InvalidSubmission as exc:
            raise click.ClickException(str(exc)) from None
    echo_json(submission_json(result.submission, config))
    if result.error is not None:
        message = (
            f"submit failed: {result.error}; {submission_id} stays pending, "
            "run the same command again to complete it"
        )
        raise click.ClickException(message)


@click.command("reconcile")
@click.option("--loop", is_flag=True, help="Run a pass every --interval until SIGTERM.")
@click.option(
    "--interval",
    type=Duration(),
    default=None,
    help="Time between passes with --loop [default: RECONCILE_INTERVAL, 60s].",
)
@click.option(
    "--older-than",
    type=Duration(),
    default=None,
    help="Poll submissions unchanged this long, e.g. 30s, 15m, 2h [default: STUCK_AFTER, 15m].",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Poll at most this many jobs."
)
@click.option(
    "--submission",
    "submission_ids",
    multiple=True,
    metavar="ID",
    help="Reconcile just this submission, stuck or not (repeatable).",
)
@click.option("--dry-run", is_flag=True, help="Fetch and report; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@with_appcontext
def reconcile_command(
    loop: bool,
    interval: float | None,
    older_than: float | None,
    limit: int | None,
    submission_ids: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
) -> None:
    """Poll ittybit for stuck jobs and apply what it says, as the webhook would have.

    One pass by default; --loop runs until SIGTERM. Exit status 1 if any job
    could not be checked, 2 on bad arguments or configuration.
    """
    config = settings()
    require_api(config)
    if loop and submission_ids:
        raise click.UsageError("--submission reconciles once; it cannot be used with --loop")
    if interval is not None and interval <= 0:
        raise click.BadParameter("must be greater than zero", param_hint="--interval")
    options = PassOptions.from_settings(
        config,
        stuck_after=older_than,
        limit=limit,
        submission_ids=tuple(dict.fromkeys(submission_ids)),
        dry_run=dry_run,
    )
    stop = threading.Event()
    # Retry waits end at once on SIGTERM: the request in hand is abandoned, not the pass.
    with client_from_settings(config, sleep=stop.wait) as client:
        reconciler = Reconciler(get_engine(), client, options, stop=stop, metrics=get_metrics())
        if loop:
            # The worker is a long-running process: its log lines go where the web's do.
            configure_logging(level=config.log_level, fmt=config.log_format, stream=sys.stdout)
            with _stop_on_signals(stop):
                _run_loop(reconciler, interval or config.reconcile_interval, as_json=as_json)
            return
        with database_errors():
            summary = _run_once(reconciler, as_json=as_json)
    _report(summary, as_json=as_json)
    if not summary.ok:
        sys.exit(1)


def _run_once(reconciler: Reconciler, *, as_json: bool) -> Summary:
    if as_json or not sys.stderr.isatty():
        return reconciler.run_pass()
    options = reconciler.options
    if options.submission_ids:
        total = len(options.submission_ids)
    else:
        now = utcnow()
        stuck_before = now - timedelta(seconds=options.stuck_after)
        with get_engine().connect() as conn:
            total = count_stuck(conn, now=now, stuck_before=stuck_before)
        if options.limit is not None:
            total = min(total, options.limit)
    if total <= options.concurrency:
        return reconciler.run_pass()
    # The bar stands in for the per-job lines; warnings still show.
    job_log = logging.getLogger("reconcile.poller")
    level = job_log.level
    job_log.setLevel(max(logging.WARNING, job_log.getEffectiveLevel()))
    with click.progressbar(length=total, label="reconciling", file=sys.stderr) as bar:
        reconciler.progress = bar.update
        try:
            return reconciler.run_pass()
        finally:
            reconciler.progress = None
            job_log.setLevel(level)


def _run_loop(reconciler: Reconciler, interval: float, *, as_json: bool) -> None:
    log.info("reconciling every %gs until SIGTERM", interval)
    while not reconciler.stop.is_set():
        try:
            summary = reconciler.run_pass()
        except SQLAlchemyError as exc:
            detail = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
            log.error("reconcile pass failed, database error: %s", detail)
        else:
            _report(summary, as_json=as_json, compact=True)
        if reconciler.stop.wait(interval):
            break
    log.info("reconcile loop stopped")


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Turn SIGTERM (Heroku's stop) and SIGINT into a clean stop after the job in hand."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info("%s received: stopping after the jobs in hand", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _report(summary: Summary, *, as_json: bool, compact: bool = False) -> None:
    if as_json:
        echo_json(summary.as_dict())
        return
    if compact:
        counts = " ".join(f"{name}={getattr(summary, name)}" for name, _ in _SUMMARY_ROWS)
        click.echo(f"reconcile: {counts} ({summary.seconds:.1f}s)")
        return
    title = "reconcile dry run (nothing written)" if summary.dry_run else "reconcile pass"
    click.echo(f"{title} finished in {summary.seconds:.1f}s")
    for name, meaning in _SUMMARY_ROWS:
        click.echo(f"  {name:<16}{getattr(summary, name):>7}  {meaning}")
    if summary.unsubmitted_sample:
        click.echo(f"  unsubmitted, e.g.: {', '.join(summary.unsubmitted_sample)}")
    if summary.stopped:
        click.echo("stopped early: the remaining jobs were left for the next pass")
    if summary.aborted:
        click.echo(f"aborted: {summary.aborted}", err=True)
    for problem in summary.problems:
        click.echo(
            f"  {problem['result']}: {problem['submission_id']} "
            f"(job {problem['job_id'] or '-'}): {problem['detail']}",
            err=True,
        )


def init_app(app: Flask) -> None:
    """Register ``submit`` and ``reconcile`` on ``app.cli``."""
    # One line per request at INFO is noise in a worker's log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app.cli.add_command(submit_command)
    app.cli.add_command(reconcile_command)
