"""On SQLite, a process handles one delivery at a time, its body read before it waits.

A ``gthread`` worker's threads share one GIL, and every process shares SQLite's one write
lock. A thread holding the write lock gives the GIL up at each statement, then waits to
take it back from the threads busy with the next deliveries' Flask hooks, parsing and log
lines, so the write lock stays held longer for every process: four threads a worker
answered a fifth to a third fewer webhooks than ``sync`` workers (bench/README.md, "Worker
class"). In turns, the other threads wait on a lock, which needs no GIL.

The body is read before the turn is taken, so a client that trickles one ties up only its
own thread: the protection from slow clients that ``gthread`` was chosen for stays. A
delivery without a Content-Length, or larger than the limit, is passed on without a turn
(the view refuses or reads it as before); turns only order the work, and SQLite's lock still
decides every write. A delivery that waits longer than a writer would wait for SQLite's lock
is answered 503 by the view (:data:`NO_TURN`). PostgreSQL's writers do not share one lock,
and there is no turn.

On SQLite the Procfile's worker answers most webhooks in its loop thread, with no hand-off
(``config/gunicorn_worker.py``); the turns still order those with the deliveries its pool
threads read (new connections, bodies that arrived in pieces).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from config.settings import Settings
from receiver.store.engines import get_engine

__all__ = ["NO_TURN", "init_app"]

#: Set in the environ of a delivery that did not get its turn in time: the view answers 503.
NO_TURN = "jobhooks.no_turn"
_PREFIX = "/webhooks/"

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class DeliveryTurns:
    """WSGI middleware: ``POST /webhooks/…`` runs in this process's turn, body read first."""

    def __init__(self, wsgi_app: WsgiApp, *, limit: int, timeout: float) -> None:
        self.wsgi_app = wsgi_app
        self.limit = limit
        self.timeout = timeout
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or not environ.get("PATH_INFO", "").startswith(
            _PREFIX
        ):
            return self.wsgi_app(environ, start_response)
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        if not 0 <= length <= self.limit:
            return self.wsgi_app(environ, start_response)
        environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read(length))
        if not self.lock.acquire(timeout=self.timeout):
            environ[NO_TURN] = True
            return self.wsgi_app(environ, start_response)
        try:
            answer = self.wsgi_app(environ, start_response)
            try:
                return list(answer)  # the answer's bytes are made in the turn, sent after it
            finally:
                close = getattr(answer, "close", None)
                if close is not None:
                    close()
        finally:
            self.lock.release()


def init_app(app: Flask, settings: Settings) -> None:
    """Put deliveries in turns when the database is SQLite."""
    if get_engine(app).dialect.name != "sqlite":
        return
    app.wsgi_app = DeliveryTurns(  # type: ignore[method-assign]
        app.wsgi_app,
        limit=settings.max_body_bytes,
        timeout=settings.sqlite_busy_timeout_ms / 1000,
    )
