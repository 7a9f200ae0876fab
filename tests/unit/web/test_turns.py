"""On SQLite a process handles one delivery at a time, and reads its body before it waits."""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from receiver.web.turns import NO_TURN, DeliveryTurns
from tests.helpers import (
    add_submission,
    encode,
    job_payload,
    signed_headers,
    stored_events,
    stored_submission,
    token_url,
)


class _Recorder:
    """A WSGI app that notes whether the turn was held while it ran."""

    def __init__(self) -> None:
        self.turns: DeliveryTurns | None = None
        self.held: list[bool] = []
        self.environ: dict[str, Any] = {}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        assert self.turns is not None
        self.held.append(self.turns.lock.locked())
        self.environ = environ
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["wsgi.input"].read()]


class _WatchedBody(io.BytesIO):
    """A request body that notes whether the turn was held while it was read."""

    def __init__(self, data: bytes, turns: DeliveryTurns) -> None:
        super().__init__(data)
        self.turns = turns
        self.held_while_read: list[bool] = []

    def read(self, size: int | None = -1) -> bytes:
        self.held_while_read.append(self.turns.lock.locked())
        return super().read(size)


def _turns(limit: int = 100, timeout: float = 1.0) -> tuple[DeliveryTurns, _Recorder]:
    inner = _Recorder()
    turns = DeliveryTurns(inner, limit=limit, timeout=timeout)
    inner.turns = turns
    return turns, inner


def _environ(body: bytes, *, path: str = "/webhooks/ittybit", **extra: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        **extra,
    }


def _call(turns: DeliveryTurns, environ: dict[str, Any]) -> bytes:
    return b"".join(turns(environ, lambda *_: None))


def test_the_body_is_read_before_the_turn_and_the_request_runs_in_it() -> None:
    turns, inner = _turns()
    environ = _environ(b'{"id": "job_1"}')
    body = environ["wsgi.input"] = _WatchedBody(b'{"id": "job_1"}', turns)

    assert _call(turns, environ) == b'{"id": "job_1"}'
    # A trickling client holds its own thread while its body arrives, never the turn.
    assert body.held_while_read == [False]
    assert inner.held == [True]
    assert not turns.lock.locked()


@pytest.mark.parametrize(
    "environ",
    [
        {**_environ(b"{}"), "REQUEST_METHOD": "GET"},
        _environ(b"{}", path="/healthz"),
        _environ(b"{}", path="/api/v1/submissions"),
        {**_environ(b"{}"), "CONTENT_LENGTH": ""},
        {**_environ(b"{}"), "CONTENT_LENGTH": "many"},
        _environ(b"x" * 101),
    ],
    ids=["get", "health", "api", "no-length", "bad-length", "over-limit"],
)
def test_other_requests_pass_without_a_turn_and_unread(environ: dict[str, Any]) -> None:
    turns, inner = _turns(limit=100)
    stream = environ["wsgi.input"]

    _call(turns, environ)

    assert inner.held == [False]
    assert inner.environ["wsgi.input"] is stream


def test_a_delivery_waits_for_the_turn_then_runs() -> None:
    turns, inner = _turns(timeout=5.0)
    turns.lock.acquire()
    done = threading.Event()
    thread = threading.Thread(target=lambda: (_call(turns, _environ(b"{}")), done.set()))
    thread.start()
    try:
        assert not done.wait(0.2)
        assert inner.held == []
    finally:
        turns.lock.release()
    thread.join(5)
    assert done.is_set()
    assert inner.held == [True]


def test_no_turn_in_time_is_passed_on_marked() -> None:
    turns, inner = _turns(timeout=0.01)
    turns.lock.acquire()
    try:
        _call(turns, _environ(b"{}"))
    finally:
        turns.lock.release()
    assert inner.environ[NO_TURN] is True
    assert inner.held == [True]  # still held by the other thread, not by this request


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "SQLITE_BUSY_TIMEOUT_MS": "50"}


def test_sqlite_app_takes_turns_and_postgresql_does_not(app: Flask, engine: Engine) -> None:
    assert isinstance(app.wsgi_app, DeliveryTurns) is (engine.dialect.name == "sqlite")


def test_a_delivery_without_its_turn_answers_503_and_stores_nothing(
    app: Flask, client: FlaskClient, engine: Engine
) -> None:
    if not isinstance(app.wsgi_app, DeliveryTurns):
        pytest.skip("PostgreSQL takes no turns")
    add_submission(engine)
    body = encode(job_payload(status="succeeded"))

    app.wsgi_app.lock.acquire()
    try:
        response = client.post(token_url(), data=body, headers=signed_headers(body))
    finally:
        app.wsgi_app.lock.release()

    assert response.status_code == 503
    assert response.json == {
        "error": "database_unavailable",
        "message": "the delivery could not be stored; retry later",
    }
    assert response.headers["Retry-After"] == "5"
    assert stored_events(engine) == []
    assert stored_submission(engine)["status"] == "pending"

    again = client.post(token_url(), data=body, headers=signed_headers(body))
    assert again.status_code == 200
    assert stored_submission(engine)["status"] == "succeeded"
