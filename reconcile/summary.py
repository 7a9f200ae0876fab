"""The tally of one reconcile pass, and the log lines it writes."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from receiver.flows.polling import JobResult, PolledJob

__all__ = [
    "EVENT_OUTCOMES",
    "MissedWatch",
    "Summary",
    "log_pass",
    "log_result",
    "log_webhooks_missing",
]

log = logging.getLogger("reconcile.passes")

_MAX_SAMPLES = 10
#: What the reconciler does with an event from ittybit's list.
EVENT_OUTCOMES = ("applied", "duplicate", "stale", "unmatched", "rejected", "ignored")


@dataclass(slots=True)
class Summary:
    """The tally of one pass; ``checked`` is every job fetched."""

    checked: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    expired: int = 0
    errors: int = 0
    deferred: int = 0
    skipped: int = 0
    rematched: int = 0
    rejected_events: int = 0
    #: Jobs created for pending submissions that asked for one (submit, the API).
    submitted: int = 0
    unsubmitted: int = 0
    #: Running jobs not polled because they changed within STUCK_AFTER, or back off.
    not_due: int = 0
    backing_off: int = 0
    #: The event list (``reconcile.event_list``): events read forward from the cursor, by outcome.
    events_read: int = 0
    events_applied: int = 0
    events_duplicate: int = 0
    events_stale: int = 0
    events_unmatched: int = 0
    events_rejected: int = 0
    #: Not about a job or a task: not stored.
    events_ignored: int = 0
    #: Listed job events no webhook brought within WEBHOOK_SILENCE_AFTER, and those one did.
    webhooks_missed: int = 0
    webhooks_brought: int = 0
    #: Missed in a row (across passes of this process), and the first one's time.
    webhooks_missed_streak: int = 0
    webhooks_missed_since: str | None = None
    #: Events younger than WEBHOOK_SILENCE_AFTER, left to their webhooks for a later pass.
    events_waiting: int = 0
    #: Requests to ``GET /events`` (finding the first cursor included).
    event_pages: int = 0
    #: Where the list's reading stopped (the last event read), and whether more is listed.
    event_cursor: str | None = None
    events_more: bool = False
    #: Another reconciler held the list: it polls after reading, this pass polls nothing.
    events_elsewhere: bool = False
    #: Why the list was not read, or stopped early; None when it was read to its end.
    events_note: str | None = None
    dry_run: bool = False
    stopped: bool = False
    aborted: str | None = None
    seconds: float = 0.0
    problems: list[dict[str, str | None]] = field(default_factory=list)
    unsubmitted_sample: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no job errored and nothing aborted the pass."""
        return self.errors == 0 and self.aborted is None

    def record(
        self, result: JobResult, job_id: str | None, submission_id: str, detail: str | None
    ) -> None:
        """Count one job's result; keep the first few problems for the report."""
        self.checked += 1
        setattr(self, result.value, getattr(self, result.value) + 1)
        if result in (JobResult.ERROR, JobResult.DEFERRED) and len(self.problems) < _MAX_SAMPLES:
            self.problems.append(
                {
                    "submission_id": submission_id,
                    "job_id": job_id,
                    "result": result.name.lower(),
                    "detail": detail,
                }
            )

    def problem(self, submission_id: str, detail: str) -> None:
        """Count an error that is no fetched job (an unknown submission id)."""
        self.errors += 1
        if len(self.problems) < _MAX_SAMPLES:
            self.problems.append(
                {
                    "submission_id": submission_id,
                    "job_id": None,
                    "result": "error",
                    "detail": detail,
                }
            )

    def event_outcomes(self) -> dict[str, int]:
        """Return the events read from the list, by what was done with them."""
        return {name: getattr(self, f"events_{name}") for name in EVENT_OUTCOMES}

    def as_dict(self) -> dict[str, Any]:
        """Return the summary as plain JSON values."""
        values = asdict(self)
        values["seconds"] = round(self.seconds, 3)
        return values


@dataclass(slots=True)
class MissedWatch:
    """Listed events no webhook brought, in a row: kept by a reconciler across its passes."""

    #: More than this many in a row is an outage worth an error line.
    threshold: int = 5
    streak: int = 0
    since: datetime | None = None

    def see(self, created_at: datetime | None, *, brought: bool) -> None:
        """Count one listed event: a webhook brought it, or none did."""
        if brought:
            self.streak, self.since = 0, None
            return
        self.streak += 1
        if self.since is None:
            self.since = created_at

    @property
    def alarming(self) -> bool:
        """Tell whether more than ``threshold`` were missed in a row."""
        return self.streak > self.threshold


def log_webhooks_missing(watch: MissedWatch, *, silence_after: float, endpoint: str | None) -> None:
    """Say at error that webhooks stopped arriving, since when, and what to check."""
    since = watch.since.isoformat() if watch.since else "unknown"
    status = (
        f"the endpoint is {endpoint} on ittybit" if endpoint else "`jobhooks ittybit endpoints`"
    )
    log.error(
        "webhooks_missing: %d events in a row reached ittybit's event list but no webhook "
        "within %ds (WEBHOOK_SILENCE_AFTER), since %s; check %s, ITTYBIT_WEBHOOK_SECRET "
        "and PUBLIC_URL",
        watch.streak,
        silence_after,
        since,
        status,
        extra={
            "data": {
                "event": "webhooks_missing",
                "missed_in_a_row": watch.streak,
                "since": since,
                "endpoint_status": endpoint,
            }
        },
    )


def log_result(job: PolledJob, result: JobResult, detail: str | None, *, dry_run: bool) -> None:
    prefix = "dry run: would be " if dry_run else ""
    level = logging.WARNING if result is JobResult.ERROR else logging.INFO
    # One line per job polled; the fields are for the JSON log (receiver/observe/logs.py).
    data = {
        "submission_id": job.submission_id,
        "job_id": job.job_id,
        "result": result.value,
        "detail": detail,
        "dry_run": dry_run,
    }
    log.log(
        level,
        "%s%s submission=%s job=%s: %s",
        prefix,
        result.name.lower(),
        job.submission_id,
        job.job_id,
        detail or "-",
        extra={"data": data},
    )


def log_pass(summary: Summary) -> None:
    counts = summary.as_dict()
    counts.pop("problems")
    counts.pop("unsubmitted_sample")
    log.info(
        "reconcile pass: %d checked, %d updated, %d errors in %.1fs",
        summary.checked,
        summary.updated,
        summary.errors,
        summary.seconds,
        extra={"data": {"event": "reconcile_pass", **counts}},
    )
