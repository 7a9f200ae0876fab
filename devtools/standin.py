"""A local stand-in for the ittybit API: jobs, events and webhook deliveries with faults.

It implements what this service uses — ``POST /jobs`` (with ``Idempotency-Key``),
``GET /jobs``, ``GET /jobs/{id}``, ``GET /tasks/{id}`` and ``GET /events?after=…`` —
runs each job through ``queued → processing → succeeded`` (``failed`` when the input
URL contains "fail", ``cancelled`` for "cancel", and never finishing for "stuck"),
and delivers a webhook for every status change after creation: the bare job to the
job's ``webhook_url`` and, when configured, an event envelope to a project-level URL.
With a ``whsec_`` secret every delivery carries Standard Webhooks headers.

Delivery faults come from options and are reproducible from a seed: each delivery's
fate is drawn from a generator seeded with (seed, job id, step, destination), and
job ids follow from the seed and creation order. A job's deliveries go out one after
another (a retry holds the ones behind it), so the only reordering is the one asked
for: a ``processing`` delivery held back until after the final one.

What was sent is kept for tests: :meth:`Standin.stats`, :meth:`Standin.deliveries`,
:meth:`Standin.jobs` (the truth) and :meth:`Standin.request_counts`; over HTTP at
``GET /_standin/stats`` and ``GET /_standin/jobs``.

Run it alone with ``python -m devtools.standin --port 8100``.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import httpx
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from config.settings import decode_webhook_secret, parse_duration
from receiver.signing import sign_standard_webhook

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = [
    "DEFAULT_API_KEY",
    "DeliveryRecord",
    "Standin",
    "StandinConfig",
    "Stats",
    "main",
    "running",
]

log = logging.getLogger(__name__)

DEFAULT_API_KEY = "standin-api-key"
RUNNING = "processing"
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
#: Answers worth another attempt; any other non-2xx is final (the receiver refused it).
_RETRYABLE = frozenset({408, 425, 429})
_MAX_LIMIT = 100


@dataclass(frozen=True, slots=True)
class StandinConfig:
    """How the stand-in behaves: API key, timing, delivery faults and retries."""

    api_key: str = DEFAULT_API_KEY
    seed: int = 0
    #: Seconds every API request waits before it is answered.
    latency: float = 0.0
    #: Seconds between a job's status changes (queued → processing → final).
    step: float = 0.5
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    #: Share of jobs whose ``processing`` delivery is held until after the final one.
    reorder_rate: float = 0.0
    #: Seconds before each delivery, plus up to ``jitter`` more.
    delay: float = 0.0
    jitter: float = 0.0
    #: A ``whsec_`` secret: when set, deliveries carry Standard Webhooks headers.
    webhook_secret: str | None = None
    #: A project-level endpoint that receives every event as a signed envelope.
    project_url: str | None = None
    retry_base: float = 0.25
    retry_max_delay: float = 4.0
    max_attempts: int = 8
    delivery_timeout: float = 5.0
    delivery_workers: int = 8
    output_base: str = "https://cdn.standin.invalid"

    def __post_init__(self) -> None:
        for name in ("drop_rate", "duplicate_rate", "reorder_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                message = f"{name} must be between 0 and 1, got {value}"
                raise ValueError(message)
        if self.project_url and not self.webhook_secret:
            message = "project_url needs webhook_secret: project-level deliveries are signed"
            raise ValueError(message)
        if self.webhook_secret:
            decode_webhook_secret(self.webhook_secret)
        if self.max_attempts < 1 or self.delivery_workers < 1:
            message = "max_attempts and delivery_workers must be at least 1"
            raise ValueError(message)


@dataclass(frozen=True, slots=True)
class Stats:
    """Counts of what the stand-in did; ``outcomes`` are the receiver's answers."""

    jobs: int
    planned: int
    dropped: int
    duplicated: int
    reordered: int
    attempts: int
    retried: int
    delivered: int
    refused: int
    given_up: int
    pending: int
    outcomes: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One planned delivery and what became of it.

    ``state`` is ``dropped`` (never sent), ``pending``, ``delivered`` (a 2xx),
    ``refused`` (a final non-2xx) or ``given_up`` (retries exhausted). ``order`` numbers
    the deliveries as they were settled, across all jobs.
    """

    seq: int
    order: int | None
    job_id: str
    event_id: str
    status: str
    destination: str
    copy: int
    reordered: bool
    state: str
    attempts: int
    answer_status: int | None
    outcome: str | None
    submission_status: str | None
    error: str | None


@dataclass(slots=True)
class _Delivery:
    seq: int
    job_id: str
    event_id: str
    msg_id: str
    status: str
    destination: str
    url: str
    body: bytes
    copy: int
    reordered: bool = False
    state: str = "pending"
    order: int | None = None
    attempts: int = 0
    answer_status: int | None = None
    answer: dict[str, Any] | None = None
    error: str | None = None

    def record(self) -> DeliveryRecord:
        answer = self.answer or {}
        outcome = answer.get("outcome")
        status = answer.get("status")
        return DeliveryRecord(
            seq=self.seq,
            order=self.order,
            job_id=self.job_id,
            event_id=self.event_id,
            status=self.status,
            destination=self.destination,
            copy=self.copy,
            reordered=self.reordered,
            state=self.state,
            attempts=self.attempts,
            answer_status=self.answer_status,
            outcome=outcome if isinstance(outcome, str) else None,
            submission_status=status if isinstance(status, str) else None,
            error=self.error,
        )


@dataclass(slots=True)
class _Job:
    id: str
    task_id: str
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
    reorder: dict[str, bool] = field(default_factory=dict)
    held: dict[str, list[_Delivery]] = field(default_factory=dict)
    outbox: deque[_Delivery] = field(default_factory=deque)
    sending: bool = False

    def progress(self) -> int:
        return {"queued": 0, RUNNING: 50}.get(self.status, 100)

    def task(self) -> dict[str, Any]:
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


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _final_outcome(input_url: str) -> str:
    text = input_url.lower()
    if "fail" in text:
        return "failed"
    if "cancel" in text:
        return "cancelled"
    if "stuck" in text:
        return "stuck"
    return "succeeded"


class _Scheduler:
    """Run callables at monotonic times on one thread."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cond = threading.Condition()
        self._order = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="standin-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def call_later(self, delay: float, function: Callable[[], None]) -> None:
        with self._cond:
            if self._stopped:
                return
            due = time.monotonic() + max(delay, 0.0)
            heapq.heappush(self._heap, (due, next(self._order), function))
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._stopped:
                    return
                _, _, function = heapq.heappop(self._heap)
            try:
                function()
            except Exception:  # one bad task must not stop every job (logged)
                log.exception("stand-in task failed")


class _QuietHandler(WSGIRequestHandler):
    # Without this, http.server waits on Nagle's algorithm: ~40 ms per response.
    disable_nagle_algorithm = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


class Standin:
    """The stand-in API (a WSGI app) and its delivery machinery."""

    def __init__(self, config: StandinConfig | None = None) -> None:
        self.config = config or StandinConfig()
        self._lock = threading.Condition()
        self._ids = random.Random(f"{self.config.seed}:ids")
        self._jitter = random.Random(f"{self.config.seed}:jitter")
        self._jobs: dict[str, _Job] = {}
        self._tasks: dict[str, str] = {}
        self._idempotency: dict[str, str] = {}
        self._events: list[dict[str, Any]] = []
        self._event_index: dict[str, int] = {}
        self._deliveries: list[_Delivery] = []
        self._counts: Counter[str] = Counter()
        self._outcomes: Counter[str] = Counter()
        self._requests: Counter[str] = Counter()
        self._settled = itertools.count(1)
        self._pending_transitions = 0
        self._busy_jobs = 0
        self._last_stamp = datetime.fromtimestamp(0, UTC)
        self._key = (
            decode_webhook_secret(self.config.webhook_secret)
            if self.config.webhook_secret
            else None
        )
        self._scheduler = _Scheduler()
        self._executor: ThreadPoolExecutor | None = None
        self._http: httpx.Client | None = None
        self._server: BaseWSGIServer | None = None
        self._server_thread: threading.Thread | None = None
        self._closed = False
        self._urls = Map(
            [
                Rule("/jobs", methods=["POST"], endpoint="create_job"),
                Rule("/jobs", methods=["GET"], endpoint="list_jobs"),
                Rule("/jobs/<job_id>", methods=["GET"], endpoint="get_job"),
                Rule("/tasks/<task_id>", methods=["GET"], endpoint="get_task"),
                Rule("/events", methods=["GET"], endpoint="list_events"),
                Rule("/_standin/stats", methods=["GET"], endpoint="stats"),
                Rule("/_standin/jobs", methods=["GET"], endpoint="truth"),
            ],
            strict_slashes=False,
        )

    # -- running ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Return the base URL the stand-in serves on (after :meth:`start`)."""
        if self._server is None:
            message = "the stand-in is not serving; call start() first"
            raise RuntimeError(message)
        return f"http://{self._server.host}:{self._server.port}"

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Standin:
        """Serve on ``host:port`` (0: a free port) and start delivering; return self."""
        self.start_delivering()
        self._server = make_server(host, port, self, threaded=True, request_handler=_QuietHandler)
        self._server_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="standin-http",
            daemon=True,
        )
        self._server_thread.start()
        return self

    def start_delivering(self) -> None:
        """Start the job clock and delivery workers without serving HTTP (WSGI use)."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(
            max_workers=self.config.delivery_workers, thread_name_prefix="standin-delivery"
        )
        self._http = httpx.Client(
            timeout=self.config.delivery_timeout,
            limits=httpx.Limits(max_connections=self.config.delivery_workers),
            headers={"User-Agent": "ittybit-standin/1"},
        )
        self._scheduler.start()

    def close(self) -> None:
        """Stop serving and delivering; deliveries in flight finish first."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._server is not None:
            self._server.shutdown()
            if self._server_thread is not None:
                self._server_thread.join(timeout=5)
        self._scheduler.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> Standin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every job has finished and every delivery is done; False on timeout."""
        with self._lock:
            return self._lock.wait_for(
                lambda: self._pending_transitions == 0 and self._busy_jobs == 0, timeout
            )

    # -- what was sent ---------------------------------------------------------------------

    def stats(self) -> Stats:
        """Return counts of planned, faulty and answered deliveries."""
        with self._lock:
            counts = self._counts
            return Stats(
                jobs=len(self._jobs),
                planned=counts["planned"],
                dropped=counts["dropped"],
                duplicated=counts["duplicated"],
                reordered=counts["reordered"],
                attempts=counts["attempts"],
                retried=counts["retried"],
                delivered=counts["delivered"],
                refused=counts["refused"],
                given_up=counts["given_up"],
                pending=sum(1 for item in self._deliveries if item.state == "pending"),
                outcomes=dict(self._outcomes),
            )

    def deliveries(self) -> list[DeliveryRecord]:
        """Return every planned delivery, in planning order."""
        with self._lock:
            return [item.record() for item in self._deliveries]

    def jobs(self) -> dict[str, dict[str, Any]]:
        """Return the truth: every job as ``GET /jobs/{id}`` would show it now."""
        with self._lock:
            return {job_id: job.snapshot() for job_id, job in self._jobs.items()}

    def request_counts(self) -> dict[str, int]:
        """Return how often each API request (``"GET /jobs/job_…"``) was made."""
        with self._lock:
            return dict(self._requests)

    # -- WSGI --------------------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except NotFound:
            response = _error(404, "not_found", "no such endpoint")
        except HTTPException as exc:
            code = (exc.name or "error").lower().replace(" ", "_")
            response = _error(exc.code or 400, code, exc.description or code)
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        endpoint, args = self._urls.bind_to_environ(request.environ).match()
        if endpoint == "stats":
            return _json(self.stats().as_dict())
        if endpoint == "truth":
            return _json(self.jobs())
        with self._lock:
            self._requests[f"{request.method} {request.path}"] += 1
        if self.config.latency > 0:
            time.sleep(self.config.latency)
        if not self._authorized(request):
            return _error(401, "unauthorized", "a valid Bearer API key is required")
        handler: Callable[..., Response] = getattr(self, f"_api_{endpoint}")
        return handler(request, **args)

    def _authorized(self, request: Request) -> bool:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(key.strip().encode(), self.config.api_key.encode())

    def _api_create_job(self, request: Request) -> Response:
        try:
            body = json.loads(request.get_data(cache=False) or b"null")
        except ValueError:
            return _error(400, "invalid_json", "body must be JSON")
        problem = _check_create(body)
        if problem:
            return _error(422, "invalid_request", problem)
        key = request.headers.get("Idempotency-Key", "").strip() or None
        with self._lock:
            if key is not None and key in self._idempotency:
                job = self._jobs[self._idempotency[key]]
                response = _json(self._api_job(job), status=200)
                response.headers["Idempotent-Replayed"] = "true"
                return response
            job = self._create_job(body)
            if key is not None:
                self._idempotency[key] = job.id
            return _json(self._api_job(job), status=201)

    def _api_get_job(self, request: Request, job_id: str) -> Response:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return _error(404, "not_found", f"no job {job_id}")
            return _json(self._api_job(job))

    def _api_get_task(self, request: Request, task_id: str) -> Response:
        with self._lock:
            job_id = self._tasks.get(task_id)
            if job_id is None:
                return _error(404, "not_found", f"no task {task_id}")
            return _json(self._jobs[job_id].task())

    def _api_list_jobs(self, request: Request) -> Response:
        status = request.args.get("status")
        with self._lock:
            items = [
                self._api_job(job)
                for job in self._jobs.values()
                if status is None or job.status == status
            ]
        return _page(request, items)

    def _api_list_events(self, request: Request) -> Response:
        with self._lock:
            items = list(self._events)
        return _page(request, items)

    def _api_job(self, job: _Job) -> dict[str, Any]:
        return {**job.snapshot(), "webhook_url": job.webhook_url}

    # -- jobs --------------------------------------------------------------------------------

    def _stamp(self) -> datetime:
        """Return now, strictly later than any stamp before it (so ordering rules can work)."""
        now = datetime.now(UTC)
        if now <= self._last_stamp:
            now = self._last_stamp + timedelta(microseconds=1)
        self._last_stamp = now
        return now

    def _create_job(self, body: Mapping[str, Any]) -> _Job:
        token = hashlib.sha256(f"{self._ids.random()}".encode()).hexdigest()
        input_url = body["input"]
        job = _Job(
            id=f"job_{token[:20]}",
            task_id=f"task_{token[20:40]}",
            kind=body.get("kind") or "video",
            input=input_url,
            options=dict(body.get("options") or {}),
            metadata=dict(body.get("metadata") or {}),
            webhook_url=body.get("webhook_url"),
            outcome=_final_outcome(input_url),
            created_at=self._stamp(),
        )
        for destination, _ in self._destinations(job):
            draw = self._draw(job.id, "reorder", destination)
            job.reorder[destination] = job.outcome != "stuck" and draw < self.config.reorder_rate
        self._jobs[job.id] = job
        self._tasks[job.task_id] = job.id
        self._add_event(job)
        steps = [RUNNING] if job.outcome == "stuck" else [RUNNING, job.outcome]
        for number, status in enumerate(steps, start=1):
            self._pending_transitions += 1
            self._scheduler.call_later(
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
            event = self._add_event(job)
            for destination, url in self._destinations(job):
                planned = self._plan(job, event, destination, url)
                if status == RUNNING and job.reorder.get(destination):
                    job.held[destination] = planned
                    continue
                self._enqueue(job, planned)
                held = job.held.pop(destination, None) if status in FINAL_STATUSES else None
                if held:
                    if planned:
                        held[0].reordered = True
                        self._counts["reordered"] += 1
                    self._enqueue(job, held)
            self._lock.notify_all()

    def _add_event(self, job: _Job) -> dict[str, Any]:
        token = hashlib.sha256(f"{job.id}:{len(self._events)}".encode()).hexdigest()[:24]
        event: dict[str, Any] = {
            "id": f"evt_{token}",
            "object": "event",
            "kind": f"job.{'created' if job.updated_at is None else job.status}",
            "data": job.snapshot(),
            "created_at": _iso(job.updated_at or job.created_at),
        }
        self._event_index[event["id"]] = len(self._events)
        self._events.append(event)
        return event

    # -- deliveries --------------------------------------------------------------------------

    def _destinations(self, job: _Job) -> list[tuple[str, str]]:
        destinations = []
        if job.webhook_url:
            destinations.append(("job", job.webhook_url))
        if self.config.project_url:
            destinations.append(("project", self.config.project_url))
        return destinations

    def _draw(self, *parts: str) -> float:
        return random.Random(":".join((str(self.config.seed), *parts))).random()

    def _plan(
        self, job: _Job, event: dict[str, Any], destination: str, url: str
    ) -> list[_Delivery]:
        """Decide one delivery's faults and return the copies to send (none if dropped)."""
        status = job.status
        body = event["data"] if destination == "job" else event
        fields = {
            "job_id": job.id,
            "event_id": event["id"],
            "msg_id": "msg_" + event["id"].removeprefix("evt_"),
            "status": status,
            "destination": destination,
            "url": url,
            "body": json.dumps(body, separators=(",", ":")).encode(),
        }
        self._counts["planned"] += 1
        # Keyed by step, not status, so a job's faults do not depend on how it ends.
        step = "running" if status == RUNNING else "final"
        if self._draw(job.id, step, destination, "drop") < self.config.drop_rate:
            self._counts["dropped"] += 1
            dropped = _Delivery(seq=len(self._deliveries), copy=1, state="dropped", **fields)
            self._deliveries.append(dropped)
            return []
        copies = 1
        if self._draw(job.id, step, destination, "duplicate") < self.config.duplicate_rate:
            copies = 2
            self._counts["duplicated"] += 1
        planned = []
        for copy in range(1, copies + 1):
            delivery = _Delivery(seq=len(self._deliveries), copy=copy, **fields)
            self._deliveries.append(delivery)
            planned.append(delivery)
        return planned

    def _enqueue(self, job: _Job, deliveries: list[_Delivery]) -> None:
        job.outbox.extend(deliveries)
        if job.outbox and not job.sending:
            job.sending = True
            self._busy_jobs += 1
            self._schedule_send(job.id, self._delay())

    def _delay(self) -> float:
        jitter = self._jitter.uniform(0, self.config.jitter) if self.config.jitter else 0.0
        return self.config.delay + jitter

    def _schedule_send(self, job_id: str, delay: float) -> None:
        def submit() -> None:
            executor = self._executor
            if executor is None or self._closed:
                return
            executor.submit(self._send, job_id)

        self._scheduler.call_later(delay, submit)

    def _headers(self, delivery: _Delivery) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._key is not None:
            stamp = int(time.time())
            headers["webhook-id"] = delivery.msg_id
            headers["webhook-timestamp"] = str(stamp)
            headers["webhook-signature"] = sign_standard_webhook(
                self._key, msg_id=delivery.msg_id, timestamp=stamp, body=delivery.body
            )
        return headers

    def _send(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs[job_id]
            delivery = job.outbox[0]
            delivery.attempts += 1
            self._counts["attempts"] += 1
        client = self._http
        if client is None:
            return
        retry_after: float | None = None
        status: int | None
        answer: dict[str, Any] | None
        error: str | None
        try:
            response = client.post(
                delivery.url, content=delivery.body, headers=self._headers(delivery)
            )
        except httpx.HTTPError as exc:
            status, answer, error = None, None, f"{type(exc).__name__}: {exc}"[:200]
        else:
            status, answer, error = response.status_code, _answer(response), None
            retry_after = _retry_after(response.headers.get("Retry-After"))
        with self._lock:
            delivery.answer_status, delivery.answer, delivery.error = status, answer, error
            if status is not None and 200 <= status < 300:
                delivery.state = "delivered"
                self._counts["delivered"] += 1
                outcome = (answer or {}).get("outcome")
                self._outcomes[outcome if isinstance(outcome, str) else "-"] += 1
            elif status is None or status >= 500 or status in _RETRYABLE:
                if delivery.attempts < self.config.max_attempts:
                    self._counts["retried"] += 1
                    self._schedule_send(job_id, self._backoff(delivery.attempts, retry_after))
                    return
                delivery.state = "given_up"
                self._counts["given_up"] += 1
                log.warning("gave up on %s to %s", delivery.msg_id, delivery.destination)
            else:
                delivery.state = "refused"
                self._counts["refused"] += 1
            delivery.order = next(self._settled)
            job.outbox.popleft()
            if job.outbox:
                self._schedule_send(job_id, self._delay())
            else:
                job.sending = False
                self._busy_jobs -= 1
                self._lock.notify_all()

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        delay = math.ldexp(self.config.retry_base, attempts - 1)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.config.retry_max_delay)


def _check_create(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    input_url = body.get("input")
    if not isinstance(input_url, str) or urlsplit(input_url).scheme not in ("http", "https"):
        return "input must be an http(s) URL"
    for name in ("options", "metadata"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            return f"{name} must be an object"
    webhook_url = body.get("webhook_url")
    if webhook_url is not None and (
        not isinstance(webhook_url, str) or urlsplit(webhook_url).scheme not in ("http", "https")
    ):
        return "webhook_url must be an http(s) URL"
    if body.get("kind") is not None and not isinstance(body["kind"], str):
        return "kind must be a string"
    return None


def _json(value: Any, *, status: int = 200) -> Response:
    return Response(json.dumps(value), status=status, mimetype="application/json")


def _error(status: int, code: str, message: str) -> Response:
    return _json({"error": code, "message": message}, status=status)


def _page(request: Request, items: list[dict[str, Any]]) -> Response:
    """Answer one page of ``items`` after the ``after`` id, with Has-More and Link headers."""
    try:
        limit = int(request.args.get("limit", "20"))
    except ValueError:
        return _error(400, "invalid_request", "limit must be a whole number")
    if not 1 <= limit <= _MAX_LIMIT:
        return _error(400, "invalid_request", f"limit must be between 1 and {_MAX_LIMIT}")
    after = request.args.get("after")
    start = 0
    if after:
        ids = [item["id"] for item in items]
        if after not in ids:
            return _error(400, "invalid_cursor", f"unknown cursor {after}")
        start = ids.index(after) + 1
    page = items[start : start + limit]
    has_more = start + limit < len(items)
    response = _json({"object": "list", "data": page, "has_more": has_more})
    response.headers["Has-More"] = "true" if has_more else "false"
    if has_more and page:
        query = {key: value for key, value in request.args.items() if key != "after"}
        query["after"] = page[-1]["id"]
        response.headers["Link"] = f'<{request.base_url}?{urlencode(query)}>; rel="next"'
    return response


def _answer(response: httpx.Response) -> dict[str, Any] | None:
    try:
        value = response.json()
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


@contextmanager
def running(config: StandinConfig | None = None, *, port: int = 0) -> Iterator[Standin]:
    """Serve a stand-in on 127.0.0.1 for the duration of a ``with`` block."""
    standin = Standin(config).start(port=port)
    try:
        yield standin
    finally:
        standin.close()


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        message = f"{text} is not between 0 and 1"
        raise argparse.ArgumentTypeError(message)
    return value


def _seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    """Serve the stand-in until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.standin", description="A local stand-in for the ittybit API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=_seconds, default=0.0, help="per request, e.g. 50ms")
    parser.add_argument("--step", type=_seconds, default=0.5, help="between status changes")
    parser.add_argument("--drop-rate", type=_rate, default=0.0)
    parser.add_argument("--duplicate-rate", type=_rate, default=0.0)
    parser.add_argument("--reorder-rate", type=_rate, default=0.0)
    parser.add_argument("--delay", type=_seconds, default=0.0, help="before each delivery")
    parser.add_argument("--jitter", type=_seconds, default=0.0, help="extra random delay")
    parser.add_argument("--webhook-secret", default=None, help="whsec_… to sign deliveries")
    parser.add_argument("--project-url", default=None, help="project-level webhook endpoint")
    parser.add_argument("--max-attempts", type=int, default=8)
    args = parser.parse_args(argv)
    try:
        config = StandinConfig(
            api_key=args.api_key,
            seed=args.seed,
            latency=args.latency,
            step=args.step,
            drop_rate=args.drop_rate,
            duplicate_rate=args.duplicate_rate,
            reorder_rate=args.reorder_rate,
            delay=args.delay,
            jitter=args.jitter,
            webhook_secret=args.webhook_secret,
            project_url=args.project_url,
            max_attempts=args.max_attempts,
        )
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s standin: %(message)s")
    standin = Standin(config).start(host=args.host, port=args.port)
    print(f"ittybit stand-in on {standin.url} (API key {config.api_key!r}); Ctrl-C stops it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        standin.close()
        print(json.dumps(standin.stats().as_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
