"""The stand-in as one object: its API served over HTTP, its job clock and its deliveries."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from devtools.standin.api import JobsApi
from devtools.standin.clock import Clock
from devtools.standin.delivery import Deliverer
from devtools.standin.endpoints import EndpointRegistry
from devtools.standin.faults import FaultPlan
from devtools.standin.jobs import JobMachine
from devtools.standin.options import StandinConfig
from devtools.standin.records import DeliveryRecord, Stats

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["Standin", "running"]


class _QuietHandler(WSGIRequestHandler):
    # Without this, http.server waits on Nagle's algorithm: ~40 ms per response.
    disable_nagle_algorithm = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


class Standin:
    """The stand-in API (a WSGI app) and its delivery machinery."""

    def __init__(self, config: StandinConfig | None = None) -> None:
        self.config = config or StandinConfig()
        # One lock for the jobs and their deliveries: a status change and the deliveries
        # it plans happen together, and wait_idle() watches both.
        self._lock = threading.Condition()
        self._clock = Clock()
        self.endpoints = EndpointRegistry()
        self._deliverer = Deliverer(
            self.config, self._lock, self._clock, FaultPlan(self.config), self.endpoints
        )
        self._machine = JobMachine(
            self.config, self._lock, self._clock, on_change=self._deliverer.publish
        )
        self._api = JobsApi(self.config, self._machine, self.stats, self.endpoints)
        self._server: BaseWSGIServer | None = None
        self._server_thread: threading.Thread | None = None
        self._started = False
        self._closed = False

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
            # close() waits for the serving loop to look up: at 20 ms it stops at once
            # (tests start and stop a stand-in hundreds of times) for an idle select.
            kwargs={"poll_interval": 0.02},
            name="standin-http",
            daemon=True,
        )
        self._server_thread.start()
        return self

    def start_delivering(self) -> None:
        """Start the job clock and delivery workers without serving HTTP (WSGI use)."""
        if self._started:
            return
        self._started = True
        self._deliverer.start()
        self._clock.start()

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
            # Free the port now, so a stand-in started next can take it over.
            self._server.server_close()
        self._clock.stop()
        self._deliverer.close()

    def __enter__(self) -> Standin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every job has finished and every delivery is done; False on timeout."""
        with self._lock:
            return self._lock.wait_for(
                lambda: self._machine.settled and self._deliverer.idle, timeout
            )

    # -- what was sent ---------------------------------------------------------------------

    def stats(self) -> Stats:
        """Return counts of planned, faulty and answered deliveries."""
        with self._lock:
            return self._deliverer.stats(jobs=self._machine.count())

    def deliveries(self) -> list[DeliveryRecord]:
        """Return every planned delivery, in planning order."""
        return self._deliverer.records()

    def jobs(self) -> dict[str, dict[str, Any]]:
        """Return the truth: every job as ``GET /jobs/{id}`` would show it now."""
        return self._machine.truth()

    def request_counts(self) -> dict[str, int]:
        """Return how often each API request (``"GET /jobs/job_…"``) was made."""
        return self._api.request_counts()

    def requests_made(self, prefix: str = "") -> int:
        """Return how many API requests were made whose ``"METHOD /path"`` starts so."""
        return sum(
            count for key, count in self._api.request_counts().items() if key.startswith(prefix)
        )

    def reset_request_counts(self) -> None:
        """Start counting API requests afresh."""
        self._api.reset_request_counts()

    def finish_held(self) -> int:
        """Let the jobs held at processing (``hold_finals``) finish; return how many."""
        return self._machine.finish_held()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return self._api(environ, start_response)


@contextmanager
def running(config: StandinConfig | None = None, *, port: int = 0) -> Iterator[Standin]:
    """Serve a stand-in on 127.0.0.1 for the duration of a ``with`` block."""
    standin = Standin(config).start(port=port)
    try:
        yield standin
    finally:
        standin.close()
