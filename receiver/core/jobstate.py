"""Normalise every ittybit job, task and event shape into one JobState value.

Pure functions: no Flask, no database. The webhook view and the API client both
call :func:`normalise` so a job reads the same whichever way it arrived.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from receiver.core.statuses import Status

__all__ = [
    "FUTURE_TOLERANCE",
    "IgnoredEvent",
    "InvalidPayload",
    "JobState",
    "NotAJob",
    "clamp_future",
    "normalise",
    "parse_json",
    "parse_timestamp",
]

log = logging.getLogger(__name__)

_RUNNING = frozenset({"pending", "waiting", "queued", "validating", "processing", "finishing"})
_SUCCEEDED = frozenset({"succeeded", "completed", "ready"})
_FAILED = frozenset({"failed", "error"})
_CANCELLED = frozenset({"cancelled", "canceled"})
_MAX_TEXT = 2000
#: The columns' sizes (receiver/store/models.py): ids, a provider's status, and an event
#: id within the inbox's 200-character dedupe key (its prefix included).
_MAX_ID = 200
_MAX_STATUS = 50
_MAX_EVENT_ID = 180
#: How far ahead of our clock a provider timestamp may be: the signature tolerance
#: (``WEBHOOK_TOLERANCE``'s default). Beyond it a timestamp is clamped, so a forged
#: ``9999-12-31`` cannot outrank every later state and pin the submission.
FUTURE_TOLERANCE = timedelta(seconds=300)
#: Event kinds about a job, a task or an automation's run: the rest are stored as ``ignored``.
_ACTED_ON_KINDS = frozenset({"job", "task", "run"})
#: The status an event kind implies when its data carries none (``task.created`` → pending).
_KIND_STATUS = {"created": "pending", "started": "processing", "updated": "processing"}


class InvalidPayload(ValueError):
    """The body is not JSON the service can read (answered with 400)."""


class NotAJob(ValueError):
    """The JSON is no job, task or event (answered with 422)."""


class IgnoredEvent(NotAJob):
    """An event envelope of a kind this service does not act on (stored, answered 200).

    ittybit retries anything but a 2xx for days: a kind added after this code was written
    is kept in the inbox as ``ignored`` rather than refused.
    """

    def __init__(self, event_id: str | None, kind: str) -> None:
        super().__init__(f"event kind {kind[:60]!r} is not one this service acts on")
        self.event_id = event_id[:180] if event_id else None
        self.kind = kind[:60]


@dataclass(frozen=True, slots=True)
class JobState:
    """What one payload says about one ittybit job."""

    job_id: str
    provider_status: str
    status: Status
    output_url: str | None = None
    error: str | None = None
    updated_at: datetime | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    event_id: str | None = None
    #: The event kind (``task.succeeded``, ``run.completed``…) when the body was an event.
    event_kind: str | None = None

    def meta_str(self, key: str) -> str | None:
        """Return a metadata value as text (ids may arrive as numbers)."""
        value = self.metadata.get(key)
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, int | str):
            return str(value)
        return None


def parse_json(body: bytes) -> Any:
    """Decode strict UTF-8 JSON; raise InvalidPayload on anything else."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        message = "body is not valid UTF-8"
        raise InvalidPayload(message) from None
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        message = "body is nested too deeply"
        raise InvalidPayload(message) from None
    except ValueError as exc:
        message = f"body is not valid JSON: {exc}"
        raise InvalidPayload(message) from None
    if _SURROGATE_ESCAPE.search(text) is not None and not _encodable(value):
        # "\ud800" alone decodes to text no database driver can store.
        message = "body is not valid JSON: a \\u escape is half of a surrogate pair"
        raise InvalidPayload(message)
    return value


#: A UTF-16 surrogate written as an escape: the only way one gets into valid UTF-8 JSON.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers could read {"status": "failed", "status": "succeeded"} differently:
    # a body that says two things is refused rather than read by the last key.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                message = f"duplicate key {key[:40]!r} in a JSON object"
                raise ValueError(message)
            seen.add(key)
    return obj


def _reject_constant(name: str) -> Any:
    message = f"{name} is not valid JSON"
    raise ValueError(message)


def _finite_float(text: str) -> float:
    # 1e400 reads as infinity, which no JSON (and no database's JSON) can hold.
    value = float(text)
    if not math.isfinite(value):
        message = f"{text[:40]} is out of range"
        raise ValueError(message)
    return value


# Built once: json.loads with options builds a decoder per call, which costs more than parsing.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys, parse_constant=_reject_constant, parse_float=_finite_float
)


def status_family(provider_status: str) -> Status:
    """Map any ittybit status spelling to a local status; unknown values count as running."""
    value = provider_status.strip().lower()
    if value in _SUCCEEDED:
        return Status.SUCCEEDED
    if value in _FAILED:
        return Status.FAILED
    if value in _CANCELLED:
        return Status.CANCELLED
    if value not in _RUNNING:
        log.warning("unknown ittybit status %r counted as running", provider_status[:50])
    return Status.PROCESSING


def clamp_future(
    state: JobState, *, now: datetime, tolerance: timedelta = FUTURE_TOLERANCE
) -> JobState:
    """Return ``state`` with a timestamp past ``now + tolerance`` set to that limit.

    Returns ``state`` itself when nothing was clamped, so callers can tell by identity.
    """
    limit = now + tolerance
    if state.updated_at is None or state.updated_at <= limit:
        return state
    return replace(state, updated_at=limit)


def parse_timestamp(value: Any) -> datetime | None:
    """Read ISO-8601 text, Unix seconds or Unix milliseconds (> 1e12) as an aware datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        message = "timestamp must be a number or an ISO-8601 string"
        raise NotAJob(message)
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return _parse_iso(text)
        value = number
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            message = "timestamp is out of range"
            raise NotAJob(message)
        seconds = value / 1000 if value > 1e12 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            message = "timestamp is out of range"
            raise NotAJob(message) from None
    message = "timestamp must be a number or an ISO-8601 string"
    raise NotAJob(message)


def _parse_iso(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        message = f"timestamp {text[:40]!r} is not ISO-8601"
        raise NotAJob(message) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        # Year 9999 west of UTC, or year 1 east of it, is past datetime's range in UTC.
        return parsed.astimezone(UTC)
    except OverflowError:
        message = "timestamp is out of range"
        raise NotAJob(message) from None


def normalise(payload: Any) -> JobState:
    """Return the JobState of a bare job/task, an event envelope or the legacy wrapper."""
    if not isinstance(payload, dict):
        message = "body must be a JSON object"
        raise NotAJob(message)
    event_id: str | None = None
    event_kind: str | None = None
    envelope_time: Any = None
    outer_error: Any = None
    job: Any = payload
    if payload.get("object") == "event" or _looks_like_event(payload):
        event_id = _text(payload.get("id"))
        event_kind = _text(payload.get("kind")) or _text(payload.get("type"))
        envelope_time = payload.get("created_at")
        job = payload.get("data")
        if event_kind is not None and event_kind.split(".", 1)[0] not in _ACTED_ON_KINDS:
            raise IgnoredEvent(event_id, event_kind)
        if event_kind is not None and event_kind.startswith("run.") and isinstance(job, dict):
            job = _run_subject(job, event_id, event_kind)
    elif "meta" in payload and "data" in payload:
        job = payload.get("data")
        outer_error = payload.get("error")
    if isinstance(job, dict) and isinstance(job.get("job"), dict) and "id" not in job:
        job = job["job"]
    if not isinstance(job, dict):
        message = "no job or task object in the body"
        raise NotAJob(message)
    return _job_state(job, event_id, event_kind, envelope_time, outer_error)


def _check_storable(
    job_id: str,
    provider_status: str,
    output_url: str | None,
    error: str | None,
    event_id: str | None,
    metadata: Mapping[str, Any],
) -> None:
    """Refuse what a column cannot hold, alike on every database, rather than fail as a 500."""
    # PostgreSQL text cannot hold NUL.
    stored = (job_id, provider_status, output_url, error, event_id)
    matched = (metadata.get("submission_id"), metadata.get("user_id"))
    if any(isinstance(value, str) and "\x00" in value for value in (*stored, *matched)):
        message = "text fields must not contain NUL characters"
        raise NotAJob(message)
    # Nor an id longer than its column: PostgreSQL would refuse it (a 500 on every retry)
    # where SQLite would keep it; cutting it could make two ids one.
    _check_lengths(
        ("id", job_id, _MAX_ID),
        ("status", provider_status, _MAX_STATUS),
        ("event id", event_id, _MAX_EVENT_ID),
        ("metadata.submission_id", matched[0], _MAX_ID),
        ("metadata.user_id", matched[1], _MAX_ID),
    )


def _check_lengths(*fields: tuple[str, Any, int]) -> None:
    for name, value, limit in fields:
        if isinstance(value, str) and len(value) > limit:
            message = f"{name} is longer than {limit} characters"
            raise NotAJob(message)


def _run_subject(run: dict[str, Any], event_id: str | None, kind: str) -> dict[str, Any]:
    """Return what a ``run.*`` event is about: its task when it names one, else the run.

    A run that names no task is matched by its metadata alone; one with neither is about
    nothing a submission could be, and is ignored.
    """
    task = run.get("task")
    if isinstance(task, dict) and _text(task.get("id")):
        merged = dict(task)
        if "metadata" not in merged and isinstance(run.get("metadata"), dict):
            merged["metadata"] = run["metadata"]
        return merged
    task_id = _text(run.get("task_id"))
    if task_id:
        return {**run, "id": task_id}
    if not run.get("metadata"):
        raise IgnoredEvent(event_id, kind)
    return run


def _looks_like_event(payload: Mapping[str, Any]) -> bool:
    identifier = payload.get("id")
    return (
        isinstance(payload.get("data"), dict)
        and "meta" not in payload
        and (isinstance(identifier, str) and identifier.startswith("evt_"))
    )


def _job_state(
    job: Mapping[str, Any],
    event_id: str | None,
    event_kind: str | None,
    envelope_time: Any,
    outer_error: Any,
) -> JobState:
    job_id = _text(job.get("id"))
    if not job_id:
        message = "job has no id"
        raise NotAJob(message)
    provider_status = _text(job.get("status"))
    if not provider_status and event_kind and "." in event_kind:
        provider_status = event_kind.rsplit(".", 1)[1]
        provider_status = _KIND_STATUS.get(provider_status, provider_status)
    if not provider_status:
        message = "job has no status"
        raise NotAJob(message)
    metadata = job.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        message = "metadata must be an object"
        raise NotAJob(message)
    status = status_family(provider_status)
    updated_at = None
    # ``updated``/``created``: the 2025-08-20 task shape (ittybit's SDK), after the jobs API's.
    candidates = (
        job.get("updated_at"),
        job.get("finished_at"),
        job.get("updated"),
        envelope_time,
        job.get("created"),
    )
    for candidate in candidates:
        updated_at = parse_timestamp(candidate)
        if updated_at is not None:
            break
    error = _error_text(job.get("error")) or _error_text(outer_error)
    output_url = _output_url(job)
    _check_storable(job_id, provider_status, output_url, error, event_id, metadata)
    return JobState(
        job_id=job_id,
        provider_status=provider_status,
        status=status,
        output_url=output_url,
        error=error if status in (Status.FAILED, Status.CANCELLED) else None,
        updated_at=updated_at,
        metadata=metadata,
        event_id=event_id,
        event_kind=event_kind[:60] if event_kind else None,
    )


def _output_url(job: Mapping[str, Any]) -> str | None:
    url = _url_of(job.get("output"))
    if url:
        return url
    outputs = job.get("outputs")
    if isinstance(outputs, list):
        for item in reversed(outputs):
            url = _url_of(item)
            if url:
                return url
    tasks = job.get("tasks")
    if isinstance(tasks, list):
        for task in reversed(tasks):
            if isinstance(task, dict):
                url = _output_url(task)
                if url:
                    return url
    return None


def _url_of(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("url")
    if isinstance(value, str) and value.strip():
        return value.strip()[:2048]
    return None


def _error_text(value: Any) -> str | None:
    if value is None or value == "" or value is False:
        return None
    if isinstance(value, dict):
        message = value.get("message") or value.get("detail") or value.get("code")
        value = message if message is not None else json.dumps(value, sort_keys=True)
    return str(value)[:_MAX_TEXT]


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None
