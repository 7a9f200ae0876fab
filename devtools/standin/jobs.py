"""The jobs: created on request, moved queued → processing → final on the clock, as events."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from devtools.standin.clock import Clock
from devtools.standin.options import StandinConfig

__all__ = ["FINAL_STATUSES", "RUNNING", "Job", "JobMachine"]

RUNNING = "processing"
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(slots=True)
class Job:
    """One job as the stand-in knows it, webhook URL and planned outcome included."""

    id: str
    task_id: str
    #: 1 for the session's first job: what its faults are drawn for (ids differ per session).
    number: int
    kind: str
    input: str
    options: dict[str, Any]
    metadata: dict[str, Any]
    webhook_url: str | None
    outcome: str
    created_at: datetime
    status: str = "queued"
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    output_url: str | None = None
    error: dict[str, str] | None = None

    def progress(self) -> int:
        """Return the percentage the API shows for the job's status."""
        return {"queued": 0, RUNNING: 50}.get(self.status, 100)

    def task(self) -> dict[str, Any]:
        """Return the job's one task as ``GET /tasks/{id}`` shows it."""
        return {
            "id": self.task_id,
            "object": "task",
            "kind": self.kind,
            "status": self.status,
            "progress": self.progress(),
            "input": self.input,
            "output": {"url": self.output_url} if self.output_url else None,
            "error": self.error,
            "metadata": self.metadata,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at or self.created_at),
        }

    def snapshot(self) -> dict[str, Any]:
        """Return the job as the API shows it (without its webhook URL)."""
        return {
            "id": self.id,
            "object": "job",
            "kind": self.kind,
            "status": self.status,
            "progress": self.progress(),
            "input": self.input,
            "options": self.options,
            "metadata": self.metadata,
            "output": {"url": self.output_url} if self.output_url else None,
            "error": self.error,
            "tasks": [self.task()],
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at or self.created_at),
            "finished_at": _iso(self.finished_at) if self.finished_at else None,
        }

    def as_api(self) -> dict[str, Any]:
        """Return the job as ``GET /jobs/{id}`` answers its owner, webhook URL included."""
        return {**self.snapshot(), "webhook_url": self.webhook_url}


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _new_id(prefix: str, size: int) -> str:
    """Return a random id, unique across sessions.

    Never derived from the seed: a second session with the same seed would hand out the
    first one's job ids again, and the receiver (whose database outlives the stand-in)
    would take them for jobs it already has.
    """
    return f"{prefix}_{secrets.token_hex(size)}"


def _final_outcome(input_url: str) -> str:
    text = input_url.lower()
    if "fail" in text:
        return "failed"
    if "cancel" in text:
        return "cancelled"
    if "stuck" in text:
        return "stuck"
    return "succeeded"


class JobMachine:
    """Create jobs, move each through its statuses one ``step`` apart, and keep the events.

    ``on_change(job, event)`` is called for every status change after creation, with the
    stand-in's lock held, so the deliveries it plans follow the changes in order.
    """

    def __init__(
        self,
        config: StandinConfig,
        lock: threading.Condition,
        clock: Clock,
        on_change: Callable[[Job, dict[str, Any]], None],
    ) -> None:
        self.config = config
        self._lock = lock
        self._clock = clock
        self._on_change = on_change
        self._jobs: dict[str, Job] = {}
        self._tasks: dict[str, str] = {}
        self._idempotency: dict[str, str] = {}
        self._events: list[dict[str, Any]] = []
        self._event_index: dict[str, int] = {}
        self._pending_transitions = 0
        #: Jobs held at processing (``hold_finals``), with the final state each will reach.
        self._held: list[tuple[str, str]] = []
        self._last_stamp = datetime.fromtimestamp(0, UTC)

    @property
    def settled(self) -> bool:
        """Return whether no status change is still to come (call with the lock held)."""
        return self._pending_transitions == 0

    def count(self) -> int:
        """Return how many jobs were created."""
        with self._lock:
            return len(self._jobs)

    def create(
        self, body: Mapping[str, Any], *, idempotency_key: str | None
    ) -> tuple[dict[str, Any], bool]:
        """Return the job a create request makes, and whether it is new.

        A request with an ``idempotency_key`` seen before gets the first job back.
        """
        with self._lock:
            if idempotency_key is not None and idempotency_key in self._idempotency:
                return self._jobs[self._idempotency[idempotency_key]].as_api(), False
            job = self._create(body)
            if idempotency_key is not None:
                self._idempotency[idempotency_key] = job.id
            return job.as_api(), True

    def get(self, job_id: str) -> dict[str, Any] | None:
        """Return the job as ``GET /jobs/{id}`` shows it, or None."""
        with self._lock:
            job = self._jobs.get(job_id)
            return job.as_api() if job is not None else None

    def get_task(self, task_id: str) -> dict[str, Any] | None:
        """Return the task as ``GET /tasks/{id}`` shows it, or None."""
        with self._lock:
            job_id = self._tasks.get(task_id)
            return self._jobs[job_id].task() if job_id is not None else None

    def listing(self, status: str | None) -> list[dict[str, Any]]:
        """Return the jobs (with ``status``, if given) in the order they were created."""
        with self._lock:
            return [
                job.as_api()
                for job in self._jobs.values()
                if status is None or job.status == status
            ]

    def events(self) -> list[dict[str, Any]]:
        """Return every event so far, oldest first."""
        with self._lock:
            return list(self._events)

    def event(self, event_id: str) -> dict[str, Any] | None:
        """Return one event as ``GET /events/{id}`` shows it, or None."""
        with self._lock:
            index = self._event_index.get(event_id)
            return None if index is None else self._events[index]

    def finish_held(self) -> int:
        """Let every held job reach its final state a step from now; return how many."""
        with self._lock:
            held, self._held = self._held, []
            for job_id, status in held:
                self._pending_transitions += 1
                self._clock.call_later(self.config.step, partial(self._transition, job_id, status))
            return len(held)

    def truth(self) -> dict[str, dict[str, Any]]:
        """Return every job as ``GET /jobs/{id}`` would show it now, without its URL."""
        with self._lock:
            return {job_id: job.snapshot() for job_id, job in self._jobs.items()}

    def _stamp(self) -> datetime:
        """Return now, strictly later than any stamp before it (so ordering rules can work)."""
        now = datetime.now(UTC)
        if now <= self._last_stamp:
            now = self._last_stamp + timedelta(microseconds=1)
        self._last_stamp = now
        return now

    def _create(self, body: Mapping[str, Any]) -> Job:
        input_url = body["input"]
        job = Job(
            id=_new_id("job", 10),
            task_id=_new_id("task", 10),
            number=len(self._jobs) + 1,
            kind=body.get("kind") or "video",
            input=input_url,
            options=dict(body.get("options") or {}),
            metadata=dict(body.get("metadata") or {}),
            webhook_url=body.get("webhook_url"),
            outcome=_final_outcome(input_url),
            created_at=self._stamp(),
        )
        self._jobs[job.id] = job
        self._tasks[job.task_id] = job.id
        self._add_event(job)
        steps = [RUNNING] if job.outcome == "stuck" else [RUNNING, job.outcome]
        if self.config.hold_finals and job.outcome != "stuck":
            self._held.append((job.id, steps.pop()))
        for number, status in enumerate(steps, start=1):
            self._pending_transitions += 1
            self._clock.call_later(
                self.config.step * number, partial(self._transition, job.id, status)
            )
        return job

    def _transition(self, job_id: str, status: str) -> None:
        with self._lock:
            self._pending_transitions -= 1
            job = self._jobs[job_id]
            job.status = status
            job.updated_at = self._stamp()
            if status in FINAL_STATUSES:
                job.finished_at = job.updated_at
                if status == "succeeded":
                    job.output_url = f"{self.config.output_base}/{job.id}/output.mp4"
                else:
                    job.error = (
                        {"code": "input_unreadable", "message": "the input could not be decoded"}
                        if status == "failed"
                        else {"code": "cancelled", "message": "the job was cancelled"}
                    )
            self._on_change(job, self._add_event(job))
            self._lock.notify_all()

    def _add_event(self, job: Job) -> dict[str, Any]:
        event: dict[str, Any] = {
            "id": _new_id("evt", 12),
            "object": "event",
            "kind": f"job.{'created' if job.updated_at is None else job.status}",
            "data": job.snapshot(),
            # Unix seconds, as ittybit lists its events; the job inside keeps ISO times.
            "created_at": round((job.updated_at or job.created_at).timestamp(), 6),
        }
        self._event_index[event["id"]] = len(self._events)
        self._events.append(event)
        return event
