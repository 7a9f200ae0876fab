"""The ittybit API client: pooled connections, timeouts, retries, normalised jobs.

Used by both processes: the worker's passes and the web process's submits and polls.

Every job the API returns goes through :func:`receiver.core.jobstate.normalise`, the same
code the webhook uses, so a job reads the same whichever way it arrived.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from config.settings import Settings
from receiver.core.jobstate import (
    InvalidPayload,
    JobState,
    NotAJob,
    normalise,
    parse_json,
    parse_timestamp,
    status_family,
)

__all__ = [
    "ApiError",
    "ApiEvent",
    "ApiUnavailable",
    "AuthError",
    "BadResponse",
    "EventPage",
    "Interrupted",
    "IttybitClient",
    "JobNotFound",
    "RateLimited",
    "RetryPolicy",
    "WebhookEndpoint",
    "client_from_settings",
    "idempotency_key",
    "set_testing",
    "tls_context",
]

log = logging.getLogger(__name__)

#: Statuses worth another try: the request may well succeed a moment later.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_TASK_PREFIXES = ("task_", "tsk_")
_ENDPOINTS = "/webhooks/endpoints"
_MAX_MESSAGE = 300
_testing = False


def set_testing(enabled: bool) -> None:
    """Turn retry waits off (tests): delays are still computed, but nothing sleeps."""
    global _testing
    _testing = enabled


class ApiError(Exception):
    """The ittybit API could not answer the request; ``status`` is the HTTP status, if any."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        #: The error's code from the body (``job_not_found``…), when it gives one.
        self.code = code


class JobNotFound(ApiError):
    """ittybit has no job with this id (404)."""


class AuthError(ApiError):
    """ittybit refused the API key (401 or 403): no other request will fare better."""


class RateLimited(ApiError):
    """ittybit asked to wait ``retry_after`` seconds, longer than this client waits itself."""

    def __init__(self, message: str, *, retry_after: float, status: int | None = 429) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class ApiUnavailable(ApiError):
    """Timeouts, connection failures or 5xx answers, still failing after every retry."""


class BadResponse(ApiError):
    """The API answered 2xx with something that is not a job."""


class Interrupted(ApiError):
    """The process is stopping; the request was abandoned between retries."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry."""

    attempts: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0
    #: A longer ``Retry-After`` is not slept through: RateLimited tells the caller when to return.
    max_retry_after: float = 30.0

    def delay(self, attempt: int) -> float:
        """Return the wait before retry number ``attempt`` (1-based): doubling, half jittered."""
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        jitter = random.uniform(0, ceiling / 2)
        return ceiling / 2 + jitter


@dataclass(frozen=True, slots=True)
class ApiEvent:
    """One entry of ``GET /events``; ``state`` is its job when it carries one."""

    id: str | None
    kind: str | None
    state: JobState | None
    raw: Mapping[str, Any] = field(repr=False)
    #: When ittybit says the event happened, if it says so readably.
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class EventPage:
    """A page of events and where the next one starts."""

    events: list[ApiEvent]
    has_more: bool
    next_after: str | None


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """A project-level webhook endpoint (``/webhooks/endpoints``, ittybit since 2025-12)."""

    id: str
    url: str
    topics: tuple[str, ...]
    status: str
    verified: bool | None = None
    #: The ``whsec_…`` secret, when the answer carries it (a create, usually).
    secret: str | None = field(default=None, repr=False)

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> WebhookEndpoint:
        """Read one endpoint object; raise BadResponse when it has no id or URL."""
        endpoint_id, url = item.get("id"), item.get("url")
        if not isinstance(endpoint_id, str) or not isinstance(url, str):
            message = "a webhook endpoint without an id or URL"
            raise BadResponse(message)
        topics = item.get("topics") or item.get("events") or ()
        secret = item.get("secret") or item.get("signing_secret")
        verified = item.get("verified")
        return cls(
            id=endpoint_id,
            url=url,
            topics=tuple(str(topic) for topic in topics) if isinstance(topics, list) else (),
            status=str(item.get("status") or "active"),
            verified=verified if isinstance(verified, bool) else None,
            secret=secret if isinstance(secret, str) else None,
        )


def idempotency_key(submission_id: str) -> str:
    """Return the ``Idempotency-Key`` of a submission's create: stable, ASCII, bounded."""
    digest = hashlib.sha256(submission_id.encode("utf-8")).hexdigest()
    return f"jobhooks-submission-{digest[:40]}"


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Return seconds from a ``Retry-After`` header (seconds or an HTTP date), if readable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _retryable(what: str, response: httpx.Response) -> tuple[ApiError, float | None]:
    """Return a failed answer worth retrying and its ``Retry-After``; raise the others."""
    status = response.status_code
    detail = _error_detail(response)
    if status in (401, 403):
        message = f"{what}: ittybit refused the API key (HTTP {status}{detail})"
        raise AuthError(message, status=status)
    if status not in RETRYABLE_STATUSES:
        raise ApiError(f"{what}: HTTP {status}{detail}", status=status, code=_error_code(response))
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return ApiUnavailable(f"{what}: HTTP {status}{detail}", status=status), retry_after


@functools.cache
def tls_context() -> ssl.SSLContext:
    """Return the process's TLS settings, as httpx makes them (CA bundle, SSL_CERT_FILE…).

    Made once and shared by every client: reading the CA bundle takes tens of milliseconds,
    which each new client (a command, a worker's notifier) would otherwise pay again.
    """
    return httpx.create_ssl_context()


class IttybitClient:
    """Talk to the ittybit API; safe to share between threads."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeout: float = 10.0,
        max_connections: int = 10,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], object] | None = None,
        budget: float | None = None,
        api_version: str | None = None,
    ) -> None:
        """Create a client; ``sleep`` waits between retries and may return True to abandon.

        ``api_version`` (a date such as ``2025-08-20``) goes out as ``Accept-Version`` on
        every request; without it ittybit answers in the version the key defaults to.

        With ``budget`` every call (a create, a fetch, its retries and waits included) ends
        within that many seconds: what the web process uses, whose workers must stay free
        for ittybit's webhooks. Without it, a call may take its retries' full course.
        """
        self.retry = retry or RetryPolicy()
        self.budget = budget
        self._sleep = sleep or time.sleep
        self._lock = threading.Lock()
        self._not_before = 0.0
        self._calls = threading.local()
        headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": "jobhooks/0.1",
        }
        if api_version:
            headers["Accept-Version"] = api_version
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=False,
            verify=tls_context(),
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        """Return the API's base URL, without a trailing slash."""
        return str(self._http.base_url).rstrip("/")

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def create_job(
        self,
        *,
        input_url: str,
        metadata: Mapping[str, Any],
        webhook_url: str,
        idempotency_key: str,
        kind: str = "video",
        options: Mapping[str, Any] | None = None,
    ) -> JobState:
        """Create a job (``POST /jobs``); a retried create with the same key makes no second job."""
        body: dict[str, Any] = {
            "input": input_url,
            "kind": kind,
            "metadata": dict(metadata),
            "webhook_url": webhook_url,
        }
        if options:
            body["options"] = dict(options)
        self._start_call()
        response = self._request(
            "POST", "/jobs", json=body, headers={"Idempotency-Key": idempotency_key}
        )
        payload = self._json(response)
        try:
            return normalise(payload)
        except NotAJob as exc:
            # A create answer may carry only the id; the job is then queued, as far as we know.
            job_id = payload.get("id") if isinstance(payload, dict) else None
            if isinstance(job_id, str) and job_id and "status" not in payload:
                return JobState(
                    job_id=job_id[:200],
                    provider_status="pending",
                    status=status_family("pending"),
                    metadata=dict(metadata),
                )
            message = f"POST /jobs answered with no job: {exc}"
            raise BadResponse(message, status=response.status_code) from None

    def get_job(self, job_id: str) -> JobState:
        """Fetch a job (``GET /jobs/{id}``, falling back to ``/tasks/{id}`` for task ids).

        A 404 from either path is "not found". For a task id, ``/jobs`` answering
        ``task_not_found`` is final (an API that serves tasks there has looked); any other
        404 there (``job_not_found``, no such route) leaves ``/tasks`` to ask.
        """
        self._start_call()
        try:
            response = self._request("GET", f"/jobs/{quote(job_id, safe='')}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            if not job_id.startswith(_TASK_PREFIXES) or exc.code == "task_not_found":
                message = f"job {job_id} not found"
                raise JobNotFound(message, status=404) from None
            try:
                response = self._request("GET", f"/tasks/{quote(job_id, safe='')}")
            except ApiError as task_exc:
                if task_exc.status == 404:
                    message = f"task {job_id} not found"
                    raise JobNotFound(message, status=404) from None
                raise
        try:
            return normalise(self._json(response))
        except NotAJob as exc:
            message = f"GET {job_id} answered with no job: {exc}"
            raise BadResponse(message, status=response.status_code) from None

    def list_events(
        self, *, after: str | None = None, limit: int = 100, order: str | None = "asc"
    ) -> EventPage:
        """Return one page of ``GET /events``: oldest first after the event id ``after``.

        ittybit lists newest first unless asked otherwise: ``order=None`` sends no order
        (so ``limit=1`` finds the newest event), ``order="desc"`` pages back in time.
        """
        params: dict[str, str | int] = {"limit": limit}
        if order is not None:
            params["order"] = order
        if after:
            params["after"] = after
        self._start_call()
        response = self._request("GET", "/events", params=params)
        payload = self._json(response)
        items: Any = payload
        body_has_more = None
        if isinstance(payload, dict):
            items = payload.get("data", payload.get("events"))
            meta = payload.get("meta")
            body_has_more = payload.get(
                "has_more", meta.get("has_more") if isinstance(meta, dict) else None
            )
        if not isinstance(items, list):
            message = "GET /events answered with no list of events"
            raise BadResponse(message, status=response.status_code)
        events = [_event(item) for item in items if isinstance(item, dict)]
        header = response.headers.get("Has-More")
        if header is not None:
            has_more = header.strip().lower() == "true"
        elif body_has_more is not None:
            has_more = bool(body_has_more)
        else:
            has_more = 'rel="next"' in response.headers.get("Link", "")
        next_after = next((event.id for event in reversed(events) if event.id), after)
        return EventPage(events=events, has_more=has_more, next_after=next_after)

    def list_endpoints(self) -> list[WebhookEndpoint]:
        """Return the project's webhook endpoints (``GET /webhooks/endpoints``, every page)."""
        endpoints: list[WebhookEndpoint] = []
        params: dict[str, str | int] = {"limit": 100}
        self._start_call()
        while True:
            payload = self._json(self._request("GET", _ENDPOINTS, params=params))
            items = payload.get("data") if isinstance(payload, dict) else payload
            if not isinstance(items, list):
                message = f"GET {_ENDPOINTS} answered with no list"
                raise BadResponse(message)
            page = [WebhookEndpoint.from_api(item) for item in items if isinstance(item, dict)]
            endpoints.extend(page)
            more = isinstance(payload, dict) and payload.get("has_more") is True
            if not more or not page:
                return endpoints
            params["after"] = page[-1].id

    def create_endpoint(self, *, url: str, topics: list[str]) -> WebhookEndpoint:
        """Register a webhook endpoint (``POST /webhooks/endpoints``)."""
        self._start_call()
        body = {"url": url, "topics": topics}
        return self._endpoint(self._request("POST", _ENDPOINTS, json=body))

    def update_endpoint(self, endpoint_id: str, *, topics: list[str]) -> WebhookEndpoint:
        """Change an endpoint's topics (``PATCH /webhooks/endpoints/{id}``)."""
        self._start_call()
        path = f"{_ENDPOINTS}/{quote(endpoint_id, safe='')}"
        return self._endpoint(self._request("PATCH", path, json={"topics": topics}))

    def delete_endpoint(self, endpoint_id: str) -> None:
        """Remove an endpoint (``DELETE /webhooks/endpoints/{id}``)."""
        self._start_call()
        self._request("DELETE", f"{_ENDPOINTS}/{quote(endpoint_id, safe='')}")

    def _endpoint(self, response: httpx.Response) -> WebhookEndpoint:
        payload = self._json(response)
        if isinstance(payload, dict) and isinstance(payload.get("data"), dict):
            payload = payload["data"]
        if not isinstance(payload, dict):
            message = f"{_ENDPOINTS} answered with no endpoint"
            raise BadResponse(message, status=response.status_code)
        return WebhookEndpoint.from_api(payload)

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        what = f"{method} {path}"
        for attempt in range(1, self.retry.attempts + 1):
            self._wait_for_gate(what)
            retry_after: float | None = None
            try:
                response = self._http.request(
                    method,
                    path,
                    json=json,
                    params=params,
                    headers=headers,
                    timeout=self._timeout(what),
                )
            except httpx.TimeoutException:
                error: ApiError = ApiUnavailable(f"{what}: timed out")
            except httpx.TransportError as exc:
                error = ApiUnavailable(f"{what}: connection failed ({type(exc).__name__})")
            except httpx.DecodingError:
                # A body that cannot be decoded (a broken gzip stream…) will not mend on retry.
                message = f"{what}: the answer could not be decoded"
                raise BadResponse(message) from None
            except httpx.HTTPError as exc:
                error = ApiUnavailable(f"{what}: request failed ({type(exc).__name__})")
            else:
                if response.status_code < 300:
                    return response
                error, retry_after = _retryable(what, response)
            rate_limited = error.status == 429
            if retry_after is not None and (
                attempt == self.retry.attempts or retry_after > self.retry.max_retry_after
            ):
                if rate_limited:
                    self._close_gate(retry_after)
                raise RateLimited(error.message, retry_after=retry_after, status=error.status)
            if attempt == self.retry.attempts:
                raise error
            delay = max(self.retry.delay(attempt), retry_after or 0.0)
            log.info("%s; retry %d in %.1fs", error.message, attempt, delay)
            if rate_limited:
                # A 429 speaks for the whole API key: every thread waits it out at the gate.
                self._close_gate(delay)
            else:
                self._pause(delay, what)
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_call(self) -> None:
        """Start the clock of one call's budget (if the client has one)."""
        if self.budget is not None:
            self._calls.deadline = time.monotonic() + self.budget

    def _remaining(self) -> float | None:
        deadline: float | None = getattr(self._calls, "deadline", None)
        return None if deadline is None else deadline - time.monotonic()

    def _timeout(self, what: str) -> Any:
        """Return this attempt's timeouts: the client's, or what is left of the budget."""
        remaining = self._remaining()
        if remaining is None:
            return httpx.USE_CLIENT_DEFAULT
        if remaining <= 0:
            raise self._over_budget(what)
        # Connecting (or waiting for a pooled connection) takes at most a third, so that
        # connecting and reading together stay within what is left.
        connect = min(self._http.timeout.connect or remaining, remaining / 3)
        rest = remaining - connect
        read = min(self._http.timeout.read or rest, rest)
        return httpx.Timeout(read, connect=connect, pool=connect)

    def _over_budget(self, what: str) -> ApiUnavailable:
        message = f"{what}: no answer within the {self.budget:g}s budget"
        return ApiUnavailable(message)

    def _close_gate(self, seconds: float) -> None:
        """Hold every thread's next request for ``seconds``."""
        with self._lock:
            self._not_before = max(self._not_before, time.monotonic() + seconds)

    def _wait_for_gate(self, what: str) -> None:
        with self._lock:
            remaining = self._not_before - time.monotonic()
        if remaining <= 0:
            return
        if remaining > self.retry.max_retry_after:
            message = f"{what}: rate limited by ittybit for another {remaining:.0f}s"
            raise RateLimited(message, retry_after=remaining)
        self._pause(remaining, what)

    def _pause(self, seconds: float, what: str) -> None:
        remaining = self._remaining()
        if remaining is not None and seconds >= remaining:
            raise self._over_budget(what)  # waiting would outlast the budget: give up now
        if self._sleep(0.0 if _testing else seconds) is True:
            message = f"{what}: abandoned, the process is stopping"
            raise Interrupted(message)

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return parse_json(response.content)
        except InvalidPayload as exc:
            message = f"{response.request.method} {response.request.url.path}: {exc}"
            raise BadResponse(message, status=response.status_code) from None


def _event(item: Mapping[str, Any]) -> ApiEvent:
    event_id = item.get("id")
    kind = item.get("kind") or item.get("type")
    try:
        state: JobState | None = normalise(dict(item))
    except NotAJob:
        state = None
    try:
        created_at = parse_timestamp(item.get("created_at"))
    except NotAJob:
        created_at = None
    return ApiEvent(
        id=event_id if isinstance(event_id, str) else None,
        kind=kind if isinstance(kind, str) else None,
        state=state,
        raw=item,
        created_at=created_at,
    )


def _error_code(response: httpx.Response) -> str | None:
    """Return an error body's code: ``{"error": "x"}``, ``{"error": {"code"|"kind": "x"}}``."""
    try:
        payload = response.json()
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    candidates = [payload.get("code"), payload.get("kind")]
    if isinstance(error, dict):
        candidates = [error.get("code"), error.get("kind"), error.get("type"), *candidates]
    else:
        candidates.insert(0, error)
    return next((value for value in candidates if isinstance(value, str) and value), None)


def _error_detail(response: httpx.Response) -> str:
    """Return ``: message`` from an error body, short and on one line, or nothing."""
    try:
        payload = response.json()
    except ValueError:
        return ""
    message: Any = None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            message = error.get("message") or error.get("code")
        else:
            message = error or payload.get("message") or payload.get("detail")
    if not isinstance(message, str) or not message.strip():
        return ""
    return ": " + " ".join(message.split())[:_MAX_MESSAGE]


def client_from_settings(
    settings: Settings,
    *,
    max_connections: int | None = None,
    sleep: Callable[[float], object] | None = None,
) -> IttybitClient:
    """Return a client for ``ITTYBIT_API_URL`` with the configured key and timeout."""
    return IttybitClient(
        base_url=settings.ittybit_api_url,
        api_key=settings.ittybit_api_key,
        timeout=settings.ittybit_timeout,
        max_connections=max_connections or settings.reconcile_concurrency,
        sleep=sleep,
        api_version=settings.ittybit_api_version or None,
    )
