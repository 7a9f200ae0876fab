"""``jobhooks reconcile``: poll ittybit for stuck jobs, by hand, on a schedule or as the worker.

Exit codes: 0 done, 1 a job could not be checked (or the pass was aborted), 2 bad
arguments or configuration.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import FrameType

import click

from config.settings import Settings
from receiver.cli.common import Duration, database_errors, echo_json, settings, with_app
from receiver.cli.submit import require_api
from receiver.flows.outbox import get_outbox
from receiver.flows.polling import human_duration
from receiver.ittybit.client import client_from_settings
from receiver.observe import tracing
from receiver.observe.logs import configure_logging
from receiver.observe.metrics import get_metrics
from receiver.store.engines import get_engine, get_read_engine
from receiver.store.models import utcnow
from receiver.store.stuck import count_stuck
from reconcile.notifier import delivering_in_background
from reconcile.passes import PassOptions, Reconciler
from reconcile.summary import Summary

__all__ = ["reconcile_command", "stop_on_signals"]

# The worker's own lines are logged under "reconcile", as the passes' are (the module moved
# here from reconcile/cli.py; the logger name in the worker's log did not).
log = logging.getLogger("reconcile.worker")

# One line per request at INFO is noise in a worker's log.
logging.getLogger("httpx").setLevel(logging.WARNING)

_EVENT_ROWS = (
    ("event_pages", "pages of ittybit's event list read"),
    ("events_read", "events read after the cursor"),
    ("events_applied", "events that changed a submission"),
    ("events_duplicate", "events already recorded (by their webhook, or the same state)"),
    ("events_stale", "events older than what is stored"),
    ("events_unmatched", "events kept for a submission not known yet"),
    ("events_rejected", "events refused (owner or job disagrees)"),
    ("events_ignored", "events about no job or task: not stored"),
)
_SUMMARY_ROWS = (
    ("checked", "jobs fetched from ittybit"),
    ("updated", "state changed"),
    ("unchanged", "still running, or already recorded"),
    ("failed", "now failed (404 included)"),
    ("expired", "given up: no final state in time"),
    ("errors", "could not be checked; retried later"),
    ("deferred", "rate limited; retried after Retry-After"),
    ("skipped", "named but not polled (no job, a test, or leased)"),
    ("rematched", "unmatched webhooks applied to their submission"),
    ("rejected_events", "unmatched webhooks refused on matching"),
    ("submitted", "jobs created for pending submissions"),
    ("unsubmitted", "pending, no job asked for: run submit"),
)


@click.command(
    "reconcile", short_help="Catch up from ittybit's event list, then poll the jobs still stuck."
)
@click.option("--loop", is_flag=True, help="Run a pass every --interval until SIGTERM.")
@click.option(
    "--interval",
    type=Duration(positive=True),
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
@click.option(
    "--events-since",
    type=Duration(positive=True),
    default=None,
    metavar="DURATION",
    help="First read ittybit's event list from this long ago (a backfill), e.g. 2h; "
    "events already applied come back as duplicates.",
)
@click.option("--dry-run", is_flag=True, help="Fetch and report; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@with_app
def reconcile_command(
    loop: bool,
    interval: float | None,
    older_than: float | None,
    limit: int | None,
    submission_ids: tuple[str, ...],
    events_since: float | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Catch up from ittybit's event list, then poll the jobs still stuck and apply what
    ittybit says, as the webhook would have.

    One pass by default; --loop runs until SIGTERM. Exit status 1 if any job
    could not be checked, 2 on bad arguments or configuration.
    """
    config = settings()
    require_api(config)
    if loop and submission_ids:
        raise click.UsageError("--submission reconciles once; it cannot be used with --loop")
    if loop and events_since is not None:
        raise click.UsageError(
            "--events-since is a one-off backfill; it cannot be used with --loop"
        )
    options = PassOptions.from_settings(
        config,
        stuck_after=older_than,
        limit=limit,
        submission_ids=tuple(dict.fromkeys(submission_ids)),
        dry_run=dry_run,
        events_since=events_since,
    )
    stop = threading.Event()
    # Retry waits end at once on SIGTERM: the request in hand is abandoned, not the pass.
    with client_from_settings(config, sleep=stop.wait) as client:
        reconciler = Reconciler(
            get_engine(),
            client,
            options,
            outbox=get_outbox(),
            stop=stop,
            metrics=get_metrics(),
            settings=config,
        )
        if loop:
            _run_worker(reconciler, config, interval or config.reconcile_interval, as_json=as_json)
            return
        with database_errors():
            summary = _run_once(reconciler, as_json=as_json)
    _report(summary, as_json=as_json)
    if not summary.ok:
        sys.exit(1)


def _run_worker(
    reconciler: Reconciler, config: Settings, interval: float, *, as_json: bool
) -> None:
    """Run as the worker: passes until SIGTERM, and the outbox delivered alongside."""
    # The worker is a long-running process: its log lines go where the web's do.
    configure_logging(level=config.log_level, fmt=config.log_format, stream=sys.stdout)
    tracing.start_worker(os.environ)
    # The worker also delivers the outbox, on a thread of its own (with NOTIFY_URL).
    with (
        stop_on_signals(reconciler.stop),
        delivering_in_background(get_engine(), config, reconciler.stop, metrics=get_metrics()),
    ):
        _run_loop(reconciler, interval, as_json=as_json)


def _run_once(reconciler: Reconciler, *, as_json: bool) -> Summary:
    if as_json or not sys.stderr.isatty():
        return reconciler.run_pass()
    options = reconciler.options
    if options.submission_ids:
        total = len(options.submission_ids)
    else:
        now = utcnow()
        stuck_before = now - timedelta(seconds=options.stuck_after)
        with get_read_engine().connect() as conn:
            total = count_stuck(conn, now=now, stuck_before=stuck_before)
        if options.limit is not None:
            total = min(total, options.limit)
    if total <= options.concurrency:
        return reconciler.run_pass()
    # The bar stands in for the per-job lines; warnings still show.
    job_log = logging.getLogger("reconcile.passes")
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
    """Run a pass every ``interval`` until stopped; no exception in a pass ends the worker.

    Each pass is logged as one line (``event: reconcile_pass``); a pass that fails is
    logged as one line with its traceback, counted, and the next one runs on time.
    """
    log.info("reconciling every %gs until SIGTERM", interval)
    while not reconciler.stop.is_set():
        try:
            summary = reconciler.run_pass()
        except Exception as exc:  # the worker outlives any one bad pass
            log.exception(
                "reconcile pass failed: %s",
                type(exc).__name__,
                extra={"data": {"event": "reconcile_pass_failed", "error": type(exc).__name__}},
            )
            if reconciler.metrics is not None:
                reconciler.metrics.observe_reconcile_pass(result="crashed", seconds=0.0)
        else:
            if as_json:
                echo_json(summary.as_dict())
            if summary.events_more and not reconciler.stop.is_set():
                continue  # the event list has more pages: read on without waiting
        if reconciler.stop.wait(interval):
            break
    log.info("reconcile loop stopped")


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
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


def _report(summary: Summary, *, as_json: bool) -> None:
    if as_json:
        echo_json(summary.as_dict())
        return
    title = "reconcile dry run (nothing written)" if summary.dry_run else "reconcile pass"
    click.echo(f"{title} finished in {summary.seconds:.1f}s")
    click.echo(_event_line(summary))
    if summary.event_pages:
        for name, meaning in _EVENT_ROWS:
            click.echo(f"  {name:<17}{getattr(summary, name):>6}  {meaning}")
        click.echo(_webhooks_line(summary, settings().webhook_silence_after))
    click.echo("then job by job:")
    for name, meaning in _SUMMARY_ROWS:
        click.echo(f"  {name:<16}{getattr(summary, name):>7}  {meaning}")
    if summary.unsubmitted_sample:
        click.echo(f"  unsubmitted, e.g.: {', '.join(summary.unsubmitted_sample)}")
    if summary.checked == 0 and (summary.not_due or summary.backing_off):
        click.echo(_nothing_due(summary, settings().stuck_after))
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


def _event_line(summary: Summary) -> str:
    """Say how the pass read ittybit's event list, and where it stopped."""
    if summary.event_pages == 0:
        return f"event list: {summary.events_note or 'not read'}"
    line = f"event list: {summary.event_pages} page(s), {summary.events_read} event(s)"
    if summary.event_cursor:
        line += f", read up to {summary.event_cursor}"
    if summary.events_note:
        line += f"; {summary.events_note}"
    return line


def _webhooks_line(summary: Summary, silence_after: float) -> str:
    """Say how many listed events no webhook brought in time, and how many one did."""
    line = (
        f"webhooks: {summary.webhooks_missed} listed event(s) no webhook brought within "
        f"{human_duration(silence_after)} (WEBHOOK_SILENCE_AFTER), {summary.webhooks_brought} "
        "brought by one"
    )
    if summary.webhooks_missed_since:
        line += (
            f"; {summary.webhooks_missed_streak} missed in a row since "
            f"{summary.webhooks_missed_since}"
        )
    if summary.events_waiting:
        line += f"; {summary.events_waiting} younger event(s) wait for their webhook"
    return line


def _nothing_due(summary: Summary, stuck_after: float) -> str:
    """Say why a pass checked nothing, and how to include what it left out."""
    parts = []
    if summary.not_due:
        parts.append(
            f"{summary.not_due} running job(s) changed within STUCK_AFTER "
            f"({human_duration(stuck_after)}) and are not due yet: "
            "include them with --older-than 0s, or name one with --submission ID"
        )
    if summary.backing_off:
        parts.append(
            f"{summary.backing_off} job(s) wait for their next poll (backing off): "
            "--submission ID polls one now"
        )
    return "nothing was due: " + "; ".join(parts)
