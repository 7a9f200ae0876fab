"""Decide what a job state does to a submission: the ordering and terminal rules.

Pure: given the submission as stored and a JobState, say whether and how it changes.

- A final state (succeeded, failed, cancelled) is never replaced by a running one.
- A final state is replaced by a *different* final state only when the new one carries a
  provider timestamp strictly later than the stored one; a stored final state without a
  timestamp stays.
- Between running states the later timestamp wins; when either has none, or they are equal,
  the order of ittybit's steps decides (pending/waiting/queued < validating < processing <
  finishing).
- ``expired`` is the reconciler's verdict on a job that never finished: it replaces only a
  running state, and yields to any final state.
- Only an ``http``/``https`` output URL becomes a result: a state carrying any other
  (``javascript:``, ``data:``) is rejected whole, and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from receiver.core.jobstate import JobState
from receiver.core.statuses import TERMINAL_STATUSES, Outcome, Status

__all__ = [
    "Change",
    "SubmissionRow",
    "decide_transition",
    "output_url_refusal",
    "running_rank",
]

#: ittybit's running steps in the order a job goes through them.
_RUNNING_ORDER = {
    "pending": 0,
    "waiting": 0,
    "queued": 0,
    "validating": 1,
    "processing": 2,
    "finishing": 3,
}
#: A status ittybit added after this code was written counts as running, mid-way.
_UNKNOWN_RANK = _RUNNING_ORDER["processing"]


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
    is_test: bool = False


@dataclass(frozen=True, slots=True)
class Change:
    """The verdict on one state: ``values`` to write, or none with the outcome and reason."""

    outcome: Outcome
    values: dict[str, object] | None = None
    reason: str | None = None

    @property
    def new_status(self) -> str | None:
        """Return the status this change sets, if it sets one."""
        if self.values is None:
            return None
        status = self.values.get("status")
        return None if status is None else str(status)


def running_rank(provider_status: str | None) -> int:
    """Return how far along ittybit's running steps ``provider_status`` is (-1: not started)."""
    if provider_status is None:
        return -1
    return _RUNNING_ORDER.get(provider_status.strip().lower(), _UNKNOWN_RANK)


def _stale(reason: str) -> Change:
    return Change(Outcome.STALE, reason=reason)


def _later(new: datetime | None, old: datetime | None) -> bool:
    return new is not None and old is not None and new > old


def _earlier(new: datetime | None, old: datetime | None) -> bool:
    return new is not None and old is not None and new < old


def output_url_refusal(url: str | None) -> str | None:
    """Return why ``url`` may not become a result (not an absolute http(s) URL), or None."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return "output URL is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        # The scheme only, bounded: the URL itself may be a script or megabytes of data.
        scheme = parts.scheme[:20] or "none"
        return f"output URL must be http(s), not {scheme!r}"
    if not parts.netloc:
        return "output URL has no host"
    return None


def decide_transition(current: SubmissionRow, state: JobState) -> Change:
    """Return the change ``state`` makes to ``current``, keeping terminal and ordering rules."""
    refused = output_url_refusal(state.output_url)
    if refused is not None:
        return Change(Outcome.REJECTED, reason=refused)
    verdict = _refusal(current, state)
    if verdict is not None:
        return verdict
    values = _values(current, state)
    changed = {key: value for key, value in values.items() if getattr(current, key) != value}
    if not changed:
        return Change(Outcome.DUPLICATE, reason="state already recorded")
    stamp = _stamp(current, state)
    if stamp != current.provider_updated_at:
        changed["provider_updated_at"] = stamp
    return Change(Outcome.APPLIED, changed)


def _refusal(current: SubmissionRow, state: JobState) -> Change | None:
    """Return why ``state`` may not touch ``current``, as a stale verdict, or None."""
    stored, new = current.status, state.status
    new_final = new in TERMINAL_STATUSES
    if new is Status.EXPIRED:
        if stored in TERMINAL_STATUSES:
            return _stale(f"submission is already {stored}; expiry does not replace it")
        return None
    if stored in TERMINAL_STATUSES:
        if not new_final:
            return _stale(f"submission is already {stored}")
        if new != stored and not _later(state.updated_at, current.provider_updated_at):
            return _stale(f"conflicting final state without a strictly later timestamp ({stored})")
        if new == stored and _earlier(state.updated_at, current.provider_updated_at):
            return _stale("older than the state already recorded")
        return None
    if stored == Status.EXPIRED:
        return None if new_final else _stale("submission expired; only a final state replaces it")
    if new_final:
        return None  # a job that is finished is finished, whatever its running steps said
    if _later(state.updated_at, current.provider_updated_at):
        return None
    if _earlier(state.updated_at, current.provider_updated_at):
        return _stale("older than the state already recorded")
    step, stored_step = running_rank(state.provider_status), running_rank(current.provider_status)
    if step < stored_step:
        return _stale(f"an earlier step ({state.provider_status}) than {current.provider_status}")
    if step == stored_step and state.provider_status != current.provider_status:
        return _stale(f"not later than {current.provider_status}")
    return None


def _values(current: SubmissionRow, state: JobState) -> dict[str, object]:
    """Return the columns ``state`` sets, whether or not they differ from ``current``."""
    if state.status is Status.EXPIRED:
        return {"status": Status.EXPIRED.value, "error": state.error}
    if _fills_in(current, state):
        # The same final state again, not later: it may add what is missing, never replace.
        return {
            "output_url": current.output_url or state.output_url,
            "error": current.error or state.error,
        }
    if state.status is Status.SUCCEEDED:
        output_url, error = state.output_url or current.output_url, None
    elif state.status in (Status.FAILED, Status.CANCELLED):
        output_url, error = None, state.error
    else:
        output_url, error = state.output_url or current.output_url, None
    values: dict[str, object] = {
        "status": state.status.value,
        "provider_status": state.provider_status,
        "output_url": output_url,
        "error": error,
    }
    if current.job_id is None:
        values["job_id"] = state.job_id
    return values


def _fills_in(current: SubmissionRow, state: JobState) -> bool:
    """Tell whether ``state`` repeats the stored final state without being later."""
    return (
        state.status in TERMINAL_STATUSES
        and state.status == current.status
        and not _later(state.updated_at, current.provider_updated_at)
    )


def _stamp(current: SubmissionRow, state: JobState) -> datetime | None:
    """Return the provider timestamp to store with an applied state."""
    if state.status is Status.EXPIRED:
        return current.provider_updated_at  # the reconciler's verdict, not ittybit's time
    if state.status in TERMINAL_STATUSES and current.status not in TERMINAL_STATUSES:
        # The stored final state carries its own time, or none: then nothing replaces it.
        return state.updated_at
    if _fills_in(current, state):
        return current.provider_updated_at or state.updated_at
    return state.updated_at if state.updated_at is not None else current.provider_updated_at
