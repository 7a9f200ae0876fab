"""Test helpers for the reconciler: a scripted fake ittybit API and stuck submissions."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote

import sqlalchemy as sa
from pytest_httpserver import HTTPServer
from sqlalchemy.engine import Engine
from werkzeug.wrappers import Request, Response

from receiver.store.models import Submission

API_KEY = "test-api-key"
_submissions = Submission.__table__


@dataclass
class Scripted:
    """An answer served instead of the job: a status, a body and headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class FakeIttybit:
    """Jobs served from a dict, with scripted failures, hangs and request counts.

    Unknown jobs answer 404, as ittybit does. ``hang`` holds a job's answer until
    :meth:`release` (or five seconds), to outlast a client's timeout.
    """

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.jobs: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.scripts: dict[str, list[Scripted]] = {}
        self.hang: set[str] = set()
        self.requests: Counter[str] = Counter()
        self.auth_headers: list[str | None] = []
        self.delay = 0.0
        self.on_get: Any = None
        self._released = threading.Event()
        self._lock = threading.Lock()
        server.expect_request(re.compile(r"^/jobs/[^/]+$"), method="GET").respond_with_handler(
            self._get_job
        )
        server.expect_request(re.compile(r"^/tasks/[^/]+$"), method="GET").respond_with_handler(
            self._get_task
        )
        # An API without the event list, as older ittybit versions: the reconciler polls.
        server.expect_request("/events", method="GET").respond_with_json(
            {"error": {"code": "not_found", "message": "no such endpoint"}}, status=404
        )

    @property
    def url(self) -> str:
        return self.server.url_for("").rstrip("/")

    def job(self, job_id: str, status: str = "processing", **fields: Any) -> dict[str, Any]:
        """Store the job ittybit will report for ``job_id``."""
        job = {"id": job_id, "object": "job", "kind": "video", "status": status, **fields}
        if status == "succeeded" and "output" not in fields:
            job["output"] = {"url": f"https://cdn.example.com/{job_id}.mp4"}
        if status == "failed" and "error" not in fields:
            job["error"] = {"message": "input could not be decoded"}
        self.jobs[job_id] = job
        return job

    def script(self, key: str, *answers: Scripted) -> None:
        """Serve ``answers`` in order to the next requests for ``key``, then the job."""
        self.scripts.setdefault(key, []).extend(answers)

    def release(self) -> None:
        self._released.set()

    def _scripted(self, key: str) -> Scripted | None:
        with self._lock:
            self.requests[key] += 1
            queue = self.scripts.get(key)
            return queue.pop(0) if queue else None

    def _respond(self, key: str, table: dict[str, dict[str, Any]], request: Request) -> Response:
        self.auth_headers.append(request.headers.get("Authorization"))
        scripted = self._scripted(key)
        if self.on_get is not None:
            self.on_get(key)
        if key in self.hang:
            self._released.wait(5)
        elif self.delay:
            self._released.wait(self.delay)
        if scripted is not None:
            body = "" if scripted.body is None else json.dumps(scripted.body)
            return Response(
                body,
                scripted.status,
                headers=scripted.headers,
                content_type="application/json",
            )
        job = table.get(key)
        if job is None:
            error = {"error": {"code": "not_found", "message": f"no job {key}"}}
            return Response(json.dumps(error), 404, content_type="application/json")
        return Response(json.dumps(job), 200, content_type="application/json")

    def _get_job(self, request: Request) -> Response:
        return self._respond(unquote(request.path.rsplit("/", 1)[1]), self.jobs, request)

    def _get_task(self, request: Request) -> Response:
        key = unquote(request.path.rsplit("/", 1)[1])
        return self._respond(f"task:{key}", self.tasks, request)


def add_submissions(
    engine: Engine,
    ids: Iterable[int | str],
    *,
    changed_at: datetime,
    status: str = "processing",
    with_job: bool = True,
    user_id: str = "user_1",
    **extra: Any,
) -> list[str]:
    """Insert submissions ``sub_<id>`` with jobs ``job_<id>``, last changed at ``changed_at``."""
    rows = []
    for key in ids:
        rows.append(
            {
                "submission_id": f"sub_{key}",
                "user_id": user_id,
                "input_url": f"https://example.com/uploads/{key}.mp4",
                "job_id": f"job_{key}" if with_job else None,
                "status": status,
                "meta": {},
                "created_at": changed_at,
                "updated_at": changed_at,
                **extra,
            }
        )
    with engine.begin() as conn:
        conn.execute(sa.insert(_submissions), rows)
    return [row["submission_id"] for row in rows]


def rows(engine: Engine) -> dict[str, dict[str, Any]]:
    """Return every submission as a dict, by submission id."""
    with engine.connect() as conn:
        result = conn.execute(sa.select(_submissions).order_by(_submissions.c.id))
        return {row.submission_id: dict(row._mapping) for row in result}


def at(base: datetime, **delta: float) -> datetime:
    return base + timedelta(**delta)
