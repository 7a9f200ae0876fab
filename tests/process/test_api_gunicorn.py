"""The API under the Procfile's gunicorn (two sync workers), against the real stand-in.

- With ittybit answering only after 10 s, a create gives up within API_ITTYBIT_BUDGET (202,
  pending), and webhook deliveries sent meanwhile are answered well inside ittybit's 5 s.
- schemathesis, from the served OpenAPI document, sends generated requests to every
  operation: no 5xx, and every answer fits the document.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.settings import Settings
from devtools.processes import WebProcess, base_env, free_port
from devtools.standin import DEFAULT_API_KEY, Standin, StandinConfig
from receiver.core.signing import webhook_token
from receiver.flows.api_keys import create_key
from receiver.store.engines import create_db_engine
from receiver.store.models import utcnow
from tests.helpers import WEBHOOK_SECRET, encode, job_payload, signed_headers

pytestmark = pytest.mark.slow

SECRET = "an-api-e2e-production-secret-0123"
BUDGET = 3.0
#: ittybit's window for a webhook's answer.
WEBHOOK_WINDOW = 5.0


def serve(database_url: str, standin: Standin, tmp_path: Path) -> tuple[WebProcess, dict[str, str]]:
    """Start the Procfile's web process on ``database_url``; return it and an API key header."""
    port = free_port()
    env = base_env(
        {
            "APP_ENV": "production",
            "DATABASE_URL": database_url,
            "SECRET_KEY": SECRET,
            "PUBLIC_URL": f"http://127.0.0.1:{port}",
            "ITTYBIT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "ITTYBIT_API_URL": standin.url,
            "ITTYBIT_API_KEY": DEFAULT_API_KEY,
            "API_ITTYBIT_BUDGET": f"{BUDGET:g}s",
            "PORT": str(port),
            "WEB_CONCURRENCY": "2",
            "LOG_LEVEL": "warning",
        }
    )
    engine = create_db_engine(Settings.from_env(env))
    try:
        key = create_key(engine, "e2e", now=utcnow())
    finally:
        engine.dispose()
    web = WebProcess(env, log_path=tmp_path / "gunicorn.log")
    web.start()
    return web, {"Authorization": f"Bearer {key}"}


@pytest.fixture
def slow_ittybit() -> Iterator[Standin]:
    with Standin(StandinConfig(latency=10.0, step=3600)).start() as standin:
        yield standin


def test_webhooks_are_answered_promptly_while_the_api_waits_on_ittybit(
    database_url: str, slow_ittybit: Standin, tmp_path: Path
) -> None:
    web, headers = serve(database_url, slow_ittybit, tmp_path)
    try:
        registered = httpx.put(
            f"{web.url}/api/v1/submissions/sub_hooks",
            json={"user_id": "user_1", "input_url": "https://x.example/a.mp4", "job_id": "job_h"},
            headers=headers,
            timeout=10,
        )
        assert registered.status_code == 201, registered.text
        token = webhook_token([SECRET], submission_id="sub_hooks", user_id="user_1")

        creates: list[tuple[int, float, dict[str, Any]]] = []

        def create(n: int) -> None:
            started = time.monotonic()
            response = httpx.post(
                f"{web.url}/api/v1/submissions",
                json={
                    "submission_id": f"sub_api_{n}",
                    "user_id": "user_1",
                    "input_url": f"https://x.example/{n}.mp4",
                },
                headers=headers,
                timeout=30,
            )
            creates.append((response.status_code, time.monotonic() - started, response.json()))

        # Four creates at once on two sync workers, each wanting to wait on ittybit.
        threads = [threading.Thread(target=create, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        answered: list[tuple[int, float]] = []
        statuses = ["queued", "processing", "processing", "succeeded"]
        for n, status in enumerate(statuses):
            body = encode(job_payload("job_h", status, submission_id="sub_hooks"))
            started = time.monotonic()
            response = httpx.post(
                f"{web.url}/webhooks/ittybit/{token}",
                content=body,
                headers=signed_headers(body, msg_id=f"msg_hook_{n}"),
                timeout=10,
            )
            answered.append((response.status_code, time.monotonic() - started))
        for thread in threads:
            thread.join(timeout=60)
    finally:
        web.stop()

    assert [status for status, _ in answered] == [200, 200, 200, 200]
    # One worker is kept free of ittybit waits: webhooks never queue behind the API.
    slowest = max(seconds for _, seconds in answered)
    assert slowest < 1.0 < WEBHOOK_WINDOW, answered
    assert len(creates) == 4
    assert [status for status, _, _ in creates] == [202] * 4, creates
    assert {body["status"] for _, _, body in creates} == {"pending"}
    # One create waited on ittybit for the whole budget, no longer; the others found its
    # slot taken and left their job to the worker at once.
    waited = [body for _, _, body in creates if body["error"]]
    assert len(waited) == 1, creates
    assert f"{BUDGET:g}s budget" in waited[0]["error"]
    assert max(seconds for _, seconds, _ in creates) < BUDGET + 1.0, creates
    assert web.log_tail(200).count("[CRITICAL] WORKER TIMEOUT") == 0


@pytest.fixture
def ittybit() -> Iterator[Standin]:
    with Standin(StandinConfig(step=3600)).start() as standin:
        yield standin


def test_schemathesis_finds_no_5xx_and_no_answer_outside_the_document(
    database_url: str, ittybit: Standin, tmp_path: Path
) -> None:
    web, headers = serve(database_url, ittybit, tmp_path)
    failures: list[str] = []
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        response_headers_conformance,
    ]
    try:
        schema = schemathesis.openapi.from_url(f"{web.url}/api/v1/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        # Loaded from a URL, schemathesis leaves out the operation that serves the document.
        assert {operation.label for operation in operations} == {
            "GET /api/v1/notifications",
            "GET /api/v1/notifications/{notification_id}/attempts",
            "GET /api/v1/endpoints",
            "POST /api/v1/endpoints",
            "GET /api/v1/endpoints/{endpoint_id}",
            "PATCH /api/v1/endpoints/{endpoint_id}",
            "DELETE /api/v1/endpoints/{endpoint_id}",
            "POST /api/v1/endpoints/{endpoint_id}/rotate",
            "GET /api/v1/submissions",
            "POST /api/v1/submissions",
            "GET /api/v1/submissions/{submission_id}",
            "PUT /api/v1/submissions/{submission_id}",
            "GET /api/v1/submissions/{submission_id}/events",
            "POST /api/v1/submissions/{submission_id}/reconcile",
        }
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @settings(
                    max_examples=25,
                    derandomize=True,  # the same requests on every run
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=operation.as_strategy(generation_mode=mode))
                def exercise(case: Any) -> None:
                    case.call_and_validate(base_url=web.url, headers=headers, checks=checks)

                try:
                    exercise()
                except Exception as exc:  # collected: one report for every operation
                    failures.append(f"{operation.label} ({mode.value}): {exc}")
        # schemathesis keeps its URLs short: gunicorn's request-line limit, answered for real.
        document = httpx.get(f"{web.url}/api/v1/openapi.json", timeout=10).json()
        too_long = httpx.get(
            f"{web.url}/api/v1/submissions", params={"cursor": "x" * 5000}, timeout=10
        )
    finally:
        web.stop()
    assert failures == [], "\n\n".join(failures)
    assert too_long.status_code == 414
    assert "414" in document["paths"]["/api/v1/submissions"]["get"]["responses"]
    assert "Traceback" not in web.log_tail(500)
