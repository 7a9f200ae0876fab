"""Hostile clients against real gunicorn: slow bodies must not starve probes or webhooks.

A client may send its headers, announce a body, and trickle it a byte at a time. Each such
request holds whatever reads it until the body is in; with the web process's two workers
reading bodies themselves (gunicorn's sync workers), two such clients stopped ``/healthz``
and ittybit's webhooks from being answered at all, while ittybit gives up after 5 s.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from devtools.processes import WebProcess
from tests.helpers import WEBHOOK_SECRET, encode, job_payload, signed_headers

pytestmark = pytest.mark.slow

SECRET = "a-slow-client-test-secret-key-0123456789"
#: What ittybit's webhooks and a load balancer's probe get here, whatever the slow clients do.
ANSWER_WITHIN = 1.0


def production_env(database_url: str, **extra: str) -> dict[str, str]:
    """The web process's environment as deployed, with ``extra`` on top."""
    return {
        "APP_ENV": "production",
        "DATABASE_URL": database_url,
        "SECRET_KEY": SECRET,
        "ITTYBIT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        **extra,
    }


@pytest.fixture
def server(gunicorn: Callable[..., WebProcess], database_url: str) -> WebProcess:
    # Two workers, as the Procfile runs on one dyno by default.
    return gunicorn(production_env(database_url, WEB_CONCURRENCY="2"))


@contextmanager
def trickling_clients(server: WebProcess, count: int) -> Iterator[list[socket.socket]]:
    """Open ``count`` requests that send headers and trickle their body, a byte at a time."""
    stop = threading.Event()
    clients = []
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        client.sendall(
            b"POST /webhooks/ittybit HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: 60000\r\n"
            b"\r\n{"
        )
        clients.append(client)

    def trickle() -> None:
        while not stop.wait(0.1):
            for client in clients:
                client.sendall(b" ")

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        # Long enough for the server to have taken every one of them up.
        time.sleep(0.5)
        yield clients
    finally:
        stop.set()
        thread.join()
        for client in clients:
            client.close()


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


@pytest.mark.parametrize("slow_clients", [2, 3])
def test_slow_bodies_do_not_stop_healthz_or_a_signed_webhook(
    server: WebProcess, slow_clients: int
) -> None:
    body = encode(job_payload("job_slow_clients", "processing", submission_id="sub_none"))
    with trickling_clients(server, slow_clients) as clients, httpx.Client(timeout=5) as http:
        health, health_took = timed(lambda: http.get(f"{server.url}/healthz"))
        webhook, webhook_took = timed(
            lambda: http.post(
                f"{server.url}/webhooks/ittybit",
                content=body,
                headers=signed_headers(body, msg_id="msg_slow_clients"),
            )
        )
        # The slow requests are still open, still waiting for their bodies.
        for client in clients:
            client.settimeout(0)
            with pytest.raises(BlockingIOError):
                client.recv(1)
    assert health.status_code == 200
    assert health_took < ANSWER_WITHIN
    assert webhook.status_code in (200, 202), webhook.text
    assert webhook.json()["outcome"] == "unmatched"
    assert webhook_took < ANSWER_WITHIN


def _raw_webhook(number: int) -> bytes:
    body = encode(job_payload(f"job_pipelined_{number}", "processing", submission_id="none"))
    headers = signed_headers(body, msg_id=f"msg_pipelined_{number}")
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (
        f"POST /webhooks/ittybit HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Length: {len(body)}\r\n{head}\r\n"
    ).encode() + body


def _read_answers(client: socket.socket, count: int) -> list[tuple[int, Any]]:
    """Read ``count`` HTTP answers (status and JSON body) off one connection."""
    buffer, answers = b"", []
    while len(answers) < count:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = buffer[:end].decode("latin-1")
            length = re.search(r"(?im)^content-length:\s*(\d+)", head)
            assert length is not None, head
            start, stop = end + 4, end + 4 + int(length.group(1))
            if len(buffer) >= stop:
                answers.append((int(head.split(" ", 2)[1]), json.loads(buffer[start:stop])))
                buffer = buffer[stop:]
                continue
        chunk = client.recv(65536)
        assert chunk, f"the connection closed after {len(answers)} of {count} answers"
        buffer += chunk
    return answers


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_on_sqlite_a_whole_webhook_on_a_kept_alive_connection_needs_no_free_thread(
    gunicorn: Callable[..., WebProcess], database_url: str
) -> None:
    # One worker of one thread: the trickling client below holds the only pool thread, so
    # only the worker's loop thread is left to answer (config/gunicorn_worker.py). Each
    # delivery is sent in one write, so it is whole in the socket when the loop looks: one
    # whose body comes in a later write may meet the loop first and go to the pool.
    server = gunicorn(production_env(database_url, WEB_CONCURRENCY="1", WEB_THREADS="1"))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as ittybit:
        ittybit.sendall(_raw_webhook(1))  # opens the connection ittybit keeps using
        [(status, answer)] = _read_answers(ittybit, 1)
        assert status == 202, answer  # unmatched: stored, nothing to change
        with trickling_clients(server, 1) as clients:
            started = time.monotonic()
            ittybit.sendall(_raw_webhook(2))
            [(status, answer)] = _read_answers(ittybit, 1)
            took = time.monotonic() - started
            clients[0].settimeout(0)
            with pytest.raises(BlockingIOError):
                clients[0].recv(1)  # still waiting for its body, in the pool's thread
    assert status == 202, answer
    assert answer["outcome"] == "unmatched"
    assert took < ANSWER_WITHIN


def test_a_request_pipelined_behind_a_webhook_is_answered_too(server: WebProcess) -> None:
    # On SQLite the second delivery is answered in the worker's loop and the third, already
    # read behind it, by a pool thread (config/gunicorn_worker.py); on PostgreSQL both by
    # pool threads. Neither may be lost.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
        client.sendall(_raw_webhook(1))
        first = _read_answers(client, 1)
        client.sendall(_raw_webhook(2) + _raw_webhook(3))
        rest = _read_answers(client, 2)
    assert [status for status, _ in first + rest] == [202, 202, 202]
    assert [answer["outcome"] for _, answer in first + rest] == ["unmatched"] * 3
