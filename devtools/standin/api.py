"""The jobs API as ittybit serves it, as a WSGI app; plus what the stand-in did, for tests."""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from devtools.standin.endpoints import ENDPOINT_STATUSES, EndpointRegistry
from devtools.standin.jobs import JobMachine
from devtools.standin.logs import get_logger
from devtools.standin.options import StandinConfig
from devtools.standin.records import Stats

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["JobsApi"]

log = get_logger(__name__)

_MAX_LIMIT = 100


class JobsApi:
    """``POST /jobs``, ``GET /jobs[/{id}]``, ``GET /tasks/{id}``, ``GET /events[/{id}]``.

    With ``event_list=False`` the events answer 404, as an API without the list would.

    ``GET /_standin/stats``, ``GET /_standin/jobs`` and ``GET /_standin/requests`` show
    what was sent, the truth and the API requests counted; ``POST /_standin/finish`` lets
    held jobs finish. They need no key and are not counted.
    """

    def __init__(
        self,
        config: StandinConfig,
        machine: JobMachine,
        stats: Callable[[], Stats],
        endpoints: EndpointRegistry | None = None,
    ) -> None:
        self.config = config
        self._machine = machine
        self._endpoints = endpoints or EndpointRegistry()
        self._stats = stats
        self._requests: Counter[str] = Counter()
        self._requests_lock = threading.Lock()
        self._urls = Map(
            [
                Rule("/jobs", methods=["POST"], endpoint="create_job"),
                Rule("/jobs", methods=["GET"], endpoint="list_jobs"),
                Rule("/jobs/<job_id>", methods=["GET"], endpoint="get_job"),
                Rule("/tasks/<task_id>", methods=["GET"], endpoint="get_task"),
                Rule("/events", methods=["GET"], endpoint="list_events"),
                Rule("/events/<event_id>", methods=["GET"], endpoint="get_event"),
                Rule("/webhooks/endpoints", methods=["GET"], endpoint="list_endpoints"),
                Rule("/webhooks/endpoints", methods=["POST"], endpoint="create_endpoint"),
                Rule("/webhooks/endpoints/<endpoint_id>", methods=["GET"], endpoint="get_endpoint"),
                Rule(
                    "/webhooks/endpoints/<endpoint_id>",
                    methods=["PATCH"],
                    endpoint="update_endpoint",
                ),
                Rule(
                    "/webhooks/endpoints/<endpoint_id>",
                    methods=["DELETE"],
                    endpoint="delete_endpoint",
                ),
                Rule("/_standin/stats", methods=["GET"], endpoint="stats"),
                Rule("/_standin/jobs", methods=["GET"], endpoint="truth"),
                Rule("/_standin/requests", methods=["GET"], endpoint="requests"),
                Rule("/_standin/finish", methods=["POST"], endpoint="finish"),
            ],
            strict_slashes=False,
        )

    def request_counts(self) -> dict[str, int]:
        """Return how often each API request (``"GET /jobs/job_…"``) was made."""
        with self._requests_lock:
            return dict(self._requests)

    def reset_request_counts(self) -> None:
        """Start counting API requests afresh (a test measuring one pass)."""
        with self._requests_lock:
            self._requests.clear()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except NotFound:
            response = _error(404, "not_found", "no such endpoint")
        except HTTPException as exc:
            code = (exc.name or "error").lower().replace(" ", "_")
            response = _error(exc.code or 400, code, exc.description or code)
        # The logger's filter cuts out a token, should a path ever carry one.
        log.info("%s %s %d", request.method, request.path, response.status_code)
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        endpoint, args = self._urls.bind_to_environ(request.environ).match()
        if endpoint == "stats":
            return _json(self._stats().as_dict())
        if endpoint == "truth":
            return _json(self._machine.truth())
        if endpoint == "requests":
            return _json(self.request_counts())
        if endpoint == "finish":
            return _json({"finishing": self._machine.finish_held()})
        with self._requests_lock:
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
        job, created = self._machine.create(body, idempotency_key=key)
        if created:
            return _json(job, status=201)
        response = _json(job, status=200)
        response.headers["Idempotent-Replayed"] = "true"
        return response

    def _api_get_job(self, request: Request, job_id: str) -> Response:
        job = self._machine.get(job_id)
        if job is None:
            return _error(404, "not_found", f"no job {job_id}")
        return _json(job)

    def _api_get_task(self, request: Request, task_id: str) -> Response:
        task = self._machine.get_task(task_id)
        if task is None:
            return _error(404, "not_found", f"no task {task_id}")
        return _json(task)

    def _api_list_jobs(self, request: Request) -> Response:
        return _page(request, self._machine.listing(request.args.get("status")))

    def _api_list_events(self, request: Request) -> Response:
        if not self.config.event_list:
            return _error(404, "not_found", "no such endpoint")
        events = self._machine.events()
        kind = request.args.get("kind")
        if kind:
            events = [event for event in events if event["kind"] == kind]
        return _event_page(request, events)

    def _api_get_event(self, request: Request, event_id: str) -> Response:
        if not self.config.event_list:
            return _error(404, "not_found", "no such endpoint")
        event = self._machine.event(event_id)
        if event is None:
            return _error(404, "not_found", f"no event {event_id}")
        return _json(event)

    def _api_list_endpoints(self, request: Request) -> Response:
        return _json({"object": "list", "data": self._endpoints.listing(), "has_more": False})

    def _api_create_endpoint(self, request: Request) -> Response:
        body = _body(request)
        problem = _check_endpoint(body, creating=True)
        if problem:
            return _error(422, "invalid_request", problem)
        return _json(self._endpoints.create(body["url"], body.get("topics") or []), status=201)

    def _api_get_endpoint(self, request: Request, endpoint_id: str) -> Response:
        endpoint = self._endpoints.get(endpoint_id)
        if endpoint is None:
            return _error(404, "endpoint_not_found", f"no endpoint {endpoint_id}")
        return _json(endpoint)

    def _api_update_endpoint(self, request: Request, endpoint_id: str) -> Response:
        body = _body(request)
        problem = _check_endpoint(body, creating=False)
        if problem:
            return _error(422, "invalid_request", problem)
        endpoint = self._endpoints.update(endpoint_id, body)
        if endpoint is None:
            return _error(404, "endpoint_not_found", f"no endpoint {endpoint_id}")
        return _json(endpoint)

    def _api_delete_endpoint(self, request: Request, endpoint_id: str) -> Response:
        if not self._endpoints.delete(endpoint_id):
            return _error(404, "endpoint_not_found", f"no endpoint {endpoint_id}")
        return Response(status=204)


def _body(request: Request) -> Any:
    try:
        return json.loads(request.get_data(cache=False) or b"null")
    except ValueError:
        return None


def _check_endpoint(body: Any, *, creating: bool) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    url = body.get("url")
    if (creating or url is not None) and (
        not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https")
    ):
        return "url must be an http(s) URL"
    topics = body.get("topics")
    if topics is not None and not (
        isinstance(topics, list) and all(isinstance(topic, str) for topic in topics)
    ):
        return "topics must be a list of strings"
    if body.get("status") is not None and body["status"] not in ENDPOINT_STATUSES:
        return f"status must be one of {', '.join(ENDPOINT_STATUSES)}"
    return None


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


def _limit(request: Request) -> int | Response:
    try:
        limit = int(request.args.get("limit", "20"))
    except ValueError:
        return _error(400, "invalid_request", "limit must be a whole number")
    if not 1 <= limit <= _MAX_LIMIT:
        return _error(400, "invalid_request", f"limit must be between 1 and {_MAX_LIMIT}")
    return limit


def _event_page(request: Request, events: list[dict[str, Any]]) -> Response:
    """Answer one page of ``GET /events`` as ittybit does: newest first unless ``order=asc``.

    ``after`` gives the events that follow the cursor in the order asked for (older ones
    in the default order), ``before`` those that precede it; ``limit`` is 1 to 100.
    """
    limit = _limit(request)
    if isinstance(limit, Response):
        return limit
    order = request.args.get("order", "desc")
    if order not in ("asc", "desc"):
        return _error(400, "invalid_request", "order must be asc or desc")
    items = events if order == "asc" else events[::-1]
    after, before = request.args.get("after"), request.args.get("before")
    if after and before:
        return _error(400, "invalid_request", "give after or before, not both")
    ids = [item["id"] for item in items]
    cursor = after or before
    if cursor and cursor not in ids:
        return _error(400, "invalid_cursor", f"unknown cursor {cursor}")
    if after:
        start = ids.index(after) + 1
        page = items[start : start + limit]
        has_more = start + limit < len(items)
    elif before:
        end = ids.index(before)
        page = items[max(0, end - limit) : end]
        has_more = end - limit > 0
    else:
        page = items[:limit]
        has_more = limit < len(items)
    response = _json({"object": "list", "data": page, "has_more": has_more})
    response.headers["Has-More"] = "true" if has_more else "false"
    if has_more and page and not before:
        query = {key: value for key, value in request.args.items() if key != "after"}
        query["after"] = page[-1]["id"]
        response.headers["Link"] = f'<{request.base_url}?{urlencode(query)}>; rel="next"'
    return response


def _page(request: Request, items: list[dict[str, Any]]) -> Response:
    """Answer one page of ``items`` after the ``after`` id, with Has-More and Link headers."""
    limit = _limit(request)
    if isinstance(limit, Response):
        return limit
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
