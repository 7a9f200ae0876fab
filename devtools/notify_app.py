"""A stand-in for the application jobhooks notifies: a local endpoint that verifies and keeps.

It does what the README asks of a real application: it verifies every request with the
reference ``standardwebhooks`` library (not jobhooks' own code), applies each
``webhook-id`` once and answers 2xx. How it answers can be scripted (``answer``: a 500,
a 429 with ``Retry-After``, a request held until released), it can go down and come back
on the same port, and it records every request, in the order they arrived, for tests,
``make demo`` and ``make bench``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["Answer", "Answerer", "NotifyApp", "Received", "describe"]


@dataclass(frozen=True, slots=True)
class Answer:
    """What the application answers to one request."""

    status: int = 204
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Received:
    """One request the application got, as it saw it."""

    webhook_id: str
    #: How many requests with this ``webhook-id`` came before this one, plus one.
    attempt: int
    at: float
    verified: bool
    status: int
    #: True for the one request of a ``webhook-id`` that the application applied.
    applied: bool
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return str(self.body.get("type", ""))

    @property
    def submission_id(self) -> str | None:
        data = self.body.get("data") or {}
        value = data.get("submission_id") if isinstance(data, dict) else None
        return str(value) if value is not None else None


#: Decides the answer to a request: (webhook-id, its attempt number, the parsed body).
Answerer = Callable[[str, int, dict[str, Any]], Answer]


class _QuietHandler(WSGIRequestHandler):
    # Without this, http.server waits on Nagle's algorithm: ~40 ms per response.
    disable_nagle_algorithm = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


class NotifyApp:
    """The application's notification endpoint, on 127.0.0.1.

    ``secrets`` are the ``whsec_…`` secrets the application holds; a request verifies when
    any of them does (an application may hold just one). ``on_applied`` is called once per
    ``webhook-id`` applied, e.g. to print it.
    """

    def __init__(
        self,
        secrets: Sequence[str],
        *,
        answer: Answerer | None = None,
        on_applied: Callable[[Received], object] | None = None,
    ) -> None:
        if not secrets:
            message = "the application needs at least one whsec_ secret"
            raise ValueError(message)
        self.verifiers = [Webhook(secret) for secret in secrets]
        self.answer = answer
        self.on_applied = on_applied
        self.port = 0
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._attempts: Counter[str] = Counter()
        self._in_flight: Counter[str] = Counter()
        self._overlaps: list[str] = []
        self._changed = threading.Condition(self._lock)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    # -- serving ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Return the endpoint's URL (what NOTIFY_URL names)."""
        return f"http://127.0.0.1:{self.port}/jobhooks/notifications"

    @property
    def up(self) -> bool:
        return self._server is not None

    def start(self, port: int | None = None) -> NotifyApp:
        """Serve on ``port`` (default: the port of the last start, else a free one)."""
        if self._server is not None:
            return self
        chosen = self.port if port is None else port
        self._server = make_server(
            "127.0.0.1", chosen, self, threaded=True, request_handler=_QuietHandler
        )
        self.port = self._server.port
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            # stop() waits for the serving loop to look up: 20 ms keeps stopping quick.
            kwargs={"poll_interval": 0.02},
            name="notify-app",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: from now on connections are refused, until :meth:`start`."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> NotifyApp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what was received -----------------------------------------------------------------

    @property
    def received(self) -> list[Received]:
        """Every request, in the order they arrived."""
        with self._lock:
            return list(self._received)

    @property
    def applied(self) -> list[Received]:
        """The requests applied: one per ``webhook-id``, in the order they were applied."""
        return [item for item in self.received if item.applied]

    @property
    def overlaps(self) -> list[str]:
        """The ``webhook-id`` of every request that came while another with it was open."""
        with self._lock:
            return list(self._overlaps)

    def wait_applied(self, count: int, *, timeout: float) -> bool:
        """Wait until ``count`` webhook-ids have been applied; tell whether they were."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(item.applied for item in self._received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def wait_requests(self, count: int, *, timeout: float) -> bool:
        """Wait until ``count`` requests have arrived (answered or not)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(self._attempts.values()) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    # -- the WSGI app ----------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        at = time.time()
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        webhook_id = headers.get("webhook-id", "")
        parsed = self._verify(body, headers)
        with self._lock:
            self._attempts[webhook_id] += 1
            attempt = self._attempts[webhook_id]
            if self._in_flight[webhook_id]:
                self._overlaps.append(webhook_id)
            self._in_flight[webhook_id] += 1
            self._changed.notify_all()
        try:
            if parsed is None:
                answer = Answer(401)
            elif self.answer is not None:
                answer = self.answer(webhook_id, attempt, parsed)
            else:
                answer = Answer()
        finally:
            with self._lock:
                self._in_flight[webhook_id] -= 1
        received = self._record(webhook_id, attempt, at, parsed, answer.status)
        if received.applied and self.on_applied is not None:
            self.on_applied(received)
        reason = "OK" if answer.status < 300 else "Refused"
        start_response(f"{answer.status} {reason}", [*answer.headers, ("Content-Length", "0")])
        return [b""]

    def _verify(self, body: bytes, headers: dict[str, str]) -> dict[str, Any] | None:
        for verifier in self.verifiers:
            try:
                parsed = verifier.verify(body, headers)
            except WebhookVerificationError:
                continue
            return parsed if isinstance(parsed, dict) else {"body": parsed}
        return None

    def _record(
        self, webhook_id: str, attempt: int, at: float, parsed: dict[str, Any] | None, status: int
    ) -> Received:
        with self._lock:
            # Dedupe on webhook-id, as the README tells applications to: a resent
            # notification is answered 2xx again and applied once.
            seen = any(item.applied and item.webhook_id == webhook_id for item in self._received)
            received = Received(
                webhook_id=webhook_id,
                attempt=attempt,
                at=at,
                verified=parsed is not None,
                status=status,
                applied=parsed is not None and 200 <= status < 300 and not seen,
                body=parsed or {},
            )
            self._received.append(received)
            self._changed.notify_all()
            return received


def describe(received: Received) -> str:
    """Return one line saying what a notification told the application."""
    data = received.body.get("data") or {}
    result = data.get("output_url") or data.get("error") or ""
    return (
        f"{received.type:<22} {data.get('submission_id', '-'):<12} "
        f"{data.get('status', '-'):<10} {received.webhook_id}  {result}".rstrip()
    )
