"""Decide what a job state does to a submission: the ordering and terminal rules.

Pure: given the submission as stored and a JobState, say whether and how it changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from receiver.jobstate import JobState
from receiver.models import TERMINAL_STATUSES, Outcome, Status

__all__ = ["Change", "SubmissionRow", "decide_transition"]


@dataclass(frozen=True, slots=True)
class SubmissionRow:
    """The fields of a stored submission that the rules read."""

    id: int
    submission_id: str
    user_id: str
    job_id: str | None
    status: str
    provider_status: str | None
    output_url: str | None
    error: str | None
    provider_updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class Change:
    """The verdict on one state: ``values`` to write, or none with the outcome and reason."""

    outcome: Outcome
    values: dict[str, object] | None = None
    reason: str | None = None


def _stale(reason: str) -> Change:
    return Change(Outcome.STALE, reason=reason)


def decide_transition(current: SubmissionRow, state: JobState) -> Change:
    """Return the change ``state`` makes to ``current``, keeping terminal and ordering rules."""
    new_terminal = state.status in TERMINAL_STATUSES
    if current.status in TERMINAL_STATUSES and not new_terminal:
        return _stale(f"submission is already {current.status}")
    if current.status == Status.EXPIRED and not new_terminal:
        return _stale("submission expired; only a final state replaces it")
    newer = _compare(state.updated_at, current.provider_updated_at)
    if newer < 0:
        return _stale("older than the state already recorded")
    if current.status in TERMINAL_STATUSES and state.status != current.status and newer <= 0:
        return _stale(f"conflicting final state without a newer timestamp ({current.status})")

    output_url = state.output_url or current.output_url
    error = state.error if state.status in (Status.FAILED, Status.CANCELLED) else None
    values: dict[str, object] = {
        "status": state.status.value,
        "provider_status": state.provider_status,
        "output_url": output_url,
        "error": error,
    }
    if current.job_id is None:
        values["job_id"] = state.job_id
    changed = {key: value for key, value in values.items() if getattr(current, key) != value}
    if not changed:
        return Change(Outcome.DUPLICATE, reason="state already recorded")
    if state.updated_at is not None and newer > 0:
        changed["provider_updated_at"] = state.updated_at
    return Change(Outcome.APPLIED, changed)


def _compare(new: datetime | None, old: datetime | None) -> int:
    """Return 1 if ``new`` is later, -1 if earlier, 0 if equal or either is unknown."""
    if new is None or old is None:
        return 0 if new is None else 1
    return (new > old) - (new < old)
