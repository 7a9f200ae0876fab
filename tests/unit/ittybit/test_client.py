"""The ittybit API client against a real local HTTP server: auth, retries, normalising."""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

from receiver.ittybit.client import (
    ApiError,
    ApiUnavailable,
    AuthError,
    BadResponse,
    Interrupted,
    IttybitClient,
    JobNotFound,
    RateLimited,
    RetryPolicy,
    idempotency_key,
    parse_retry_after,
    tls_context,
)
from receiver.store.models import Status
from tests.reconcile_helpers import API_KEY, FakeIttybit, Scripted


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(api_server: HTTPServer, sleeps: list[float]) -> Iterator[IttybitClient]:
    with IttybitClient(
        base_url=api_server.url_for(""),
        api_key=API_KEY,
        timeout=2.0,
        retry=RetryPolicy(attempts=3, backoff=0.5, max_backoff=4.0, max_retry_after=30.0),
        sleep=sleeps.append,
    ) as client:
        yield client


def test_clients_share_one_tls_context_that_verifies_certificates() -> None:
    shared = tls_context()
    assert shared.verify_mode == ssl.CERT_REQUIRED and shared.check_hostname
    assert shared.cert_store_stats()["x509_ca"] > 0, "no CA certificate loaded"
    for _ in range(2):
        with IttybitClient(base_url="https://api.ittybit.com", api_key=API_KEY) as client:
            assert client._http._transport._pool._ssl_context is shared  # type: ignore[attr-defined]


def test_get_job_sends_bearer_auth_and_normalises(client: IttybitClient, fake: FakeIttybit) -> None:
    fake.job(
        "job_1",
        "completed",
        output="https://cdn.example.com/out.mp4",
        metadata={"submission_id": "sub_1", "user_id": "user_1"},
        updated_at="2026-11-28T12:00:00Z",
    )
    state = client.get_job("job_1")
    assert state.job_id == "job_1"
    assert state.status is Status.SUCCEEDED
    assert state.provider_status == "completed"
    assert state.output_url == "https://cdn.example.com/out.mp4"
    assert state.updated_at == datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert state.meta_str("submission_id") == "sub_1"
    assert fake.auth_headers == [f"Bearer {API_KEY}"]


def test_legacy_wrapped_job_is_normalised(client: IttybitClient, fake: FakeIttybit) -> None:
    fake.jobs["job_2"] = {
        "meta": {"request_id": "r1"},
        "data": {"id": "job_2", "status": "error"},
        "error": "codec not supported",
    }
    state = client.get_job("job_2")
    assert state.status is Status.FAILED
    assert state.error == "codec not supported"


def test_task_ids_fall_back_to_tasks(client: IttybitClient, fake: FakeIttybit) -> None:
    fake.tasks["task:task_9"] = {
        "id": "task_9",
        "object": "task",
        "status": "ready",
        "outputs": [{"url": "https://cdn.example.com/t9.mp4"}],
    }
    state = client.get_job("task_9")
    assert state.status is Status.SUCCEEDED
    assert state.output_url == "https://cdn.example.com/t9.mp4"
    assert fake.requests == {"task_9": 1, "task:task_9": 1}


def test_404_is_job_not_found_without_a_task_lookup(
    client: IttybitClient, fake: FakeIttybit, sleeps: list[float]
) -> None:
    with pytest.raises(JobNotFound) as caught:
        client.get_job("job_missing")
    assert caught.value.status == 404
    assert fake.requests == {"job_missing": 1}
    assert sleeps == []


def test_missing_task_is_job_not_found(client: IttybitClient, fake: FakeIttybit) -> None:
    with pytest.raises(JobNotFound):
        client.get_job("tsk_gone")
    assert fake.requests == {"tsk_gone": 1, "task:tsk_gone": 1}


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_retryable_statuses_are_retried_with_backoff(
    client: IttybitClient, fake: FakeIttybit, sleeps: list[float], status: int
) -> None:
    fake.job("job_1", "processing")
    fake.script("job_1", Scripted(status), Scripted(status))
    state = client.get_job("job_1")
    assert state.status is Status.PROCESSING
    assert fake.requests["job_1"] == 3
    assert len(sleeps) == 2
    # Doubling backoff, half jittered: 0.25 to 0.5 s, then 0.5 to 1 s.
    assert 0.25 <= sleeps[0] <= 0.5
    assert 0.5 <= sleeps[1] <= 1.0


def test_gives_up_after_the_last_attempt(
    client: IttybitClient, fake: FakeIttybit, sleeps: list[float]
) -> None:
    fake.script("job_1", *[Scripted(503, {"message": "down for maintenance"})] * 3)
    with pytest.raises(ApiUnavailable) as caught:
        client.get_job("job_1")
    assert caught.value.status == 503
    assert "down for maintenance" in caught.value.message
    assert fake.requests["job_1"] == 3
    assert len(sleeps) == 2


def test_client_errors_are_not_retried(
    client: IttybitClient, fake: FakeIttybit, sleeps: list[float]
) -> None:
    fake.script("job_1", Scripted(422, {"error": {"message": "bad\nid"}}))
    with pytest.raises(ApiError) as caught:
        client.get_job("job_1")
    assert caught.value.status == 422
    assert caught.value.message.endswith("HTTP 422: bad id")
    assert fake.requests["job_1"] == 1
    assert sleeps == []


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_stop_at_once_and_never_show_the_key(
    client: IttybitClient, fake: FakeIttybit, status: int
) -> None:
    fake.script("job_1", Scripted(status, {"message": "invalid key"}))
    with pytest.raises(AuthError) as caught:
        client.get_job("job_1")
    assert API_KEY not in str(caught.value)
    assert fake.requests["job_1"] == 1


def test_retry_after_is_honoured(
    client: IttybitClient, fake: FakeIttybit, sleeps: list[float]
) -> None:
    fake.job("job_1", "succeeded")
    fake.script("job_1", Scripted(429, headers={"Retry-After": "7"}))
    assert client.get_job("job_1").status is Status.SUCCEEDED
    assert fake.requests["job_1"] == 2
    assert len(sleeps) == 1
    assert 6.5 <= sleeps[0] <= 7.0


def test_a_long_retry_after_is_handed_back_and_holds_other_requests(
    client: IttybitClient, fake: FakeIttybit, sleeps: list[float]
) -> None:
    fake.job("job_1", "succeeded")
    fake.job("job_2", "succeeded")
    fake.script("job_1", Scripted(429, headers={"Retry-After": "600"}))
    with pytest.raises(RateLimited) as caught:
        client.get_job("job_1")
    assert caught.value.retry_after == 600
    # The whole key is rate limited: the next job is not even asked for.
    with pytest.raises(RateLimited) as held:
        client.get_job("job_2")
    assert 590 < held.value.retry_after <= 600
    assert fake.requests == {"job_1": 1}
    assert sleeps == []


def test_retry_after_as_http_date() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert parse_retry_after("Sat, 28 Nov 2026 12:00:30 GMT", now=now) == 30
    assert parse_retry_after("Sat, 28 Nov 2026 11:00:00 GMT", now=now) == 0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after("12", now=now) == 12


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_errors_are_retried(sleeps: list[float]) -> None:
    with (
        IttybitClient(
            base_url=f"http://127.0.0.1:{_closed_port()}",
            api_key=API_KEY,
            retry=RetryPolicy(attempts=3),
            sleep=sleeps.append,
        ) as client,
        pytest.raises(ApiUnavailable) as caught,
    ):
        client.get_job("job_1")
    assert "connection failed" in caught.value.message
    assert len(sleeps) == 2


def test_timeouts_are_retried_then_reported(api_server: HTTPServer, fake: FakeIttybit) -> None:
    fake.job("job_1", "processing")
    fake.hang.add("job_1")
    sleeps: list[float] = []
    with (
        IttybitClient(
            base_url=fake.url,
            api_key=API_KEY,
            timeout=0.2,
            retry=RetryPolicy(attempts=2),
            sleep=sleeps.append,
        ) as client,
        pytest.raises(ApiUnavailable) as caught,
    ):
        sent: list[str] = []
        client._http.event_hooks["request"].append(lambda request: sent.append(request.url.path))
        client.get_job("job_1")
    assert caught.value.message.endswith("timed out")
    # Counted as the client sends them: a loaded server may not have read the second yet.
    assert sent == ["/jobs/job_1", "/jobs/job_1"]
    assert len(sleeps) == 1


def test_a_stopping_process_abandons_retries(fake: FakeIttybit, api_server: HTTPServer) -> None:
    fake.script("job_1", Scripted(503), Scripted(503))
    with (
        IttybitClient(base_url=fake.url, api_key=API_KEY, sleep=lambda _seconds: True) as client,
        pytest.raises(Interrupted),
    ):
        client.get_job("job_1")
    assert fake.requests["job_1"] == 1


def test_non_json_answer_is_a_bad_response(client: IttybitClient, api_server: HTTPServer) -> None:
    api_server.expect_request("/jobs/job_1").respond_with_data("<html>", content_type="text/html")
    with pytest.raises(BadResponse):
        client.get_job("job_1")


def test_answer_without_a_job_is_a_bad_response(
    client: IttybitClient, api_server: HTTPServer
) -> None:
    api_server.expect_request("/jobs/job_1").respond_with_json({"id": "job_1"})
    with pytest.raises(BadResponse, match="no status"):
        client.get_job("job_1")


def test_create_job_sends_body_headers_and_idempotency_key(
    client: IttybitClient, api_server: HTTPServer
) -> None:
    seen: list[Request] = []

    def create(request: Request) -> Response:
        seen.append(request)
        return Response(
            json.dumps({"id": "job_new", "object": "job", "status": "queued"}),
            201,
            content_type="application/json",
        )

    api_server.expect_request("/jobs", method="POST").respond_with_handler(create)
    state = client.create_job(
        input_url="https://example.com/in.mp4",
        kind="video",
        options={"width": 1280},
        metadata={"submission_id": "sub_1", "user_id": "user_1"},
        webhook_url="https://hooks.example.com/webhooks/ittybit/token",
        idempotency_key=idempotency_key("sub_1"),
    )
    assert state.job_id == "job_new"
    assert state.status is Status.PROCESSING
    (request,) = seen
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Idempotency-Key"] == idempotency_key("sub_1")
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.get_data()) == {
        "input": "https://example.com/in.mp4",
        "kind": "video",
        "options": {"width": 1280},
        "metadata": {"submission_id": "sub_1", "user_id": "user_1"},
        "webhook_url": "https://hooks.example.com/webhooks/ittybit/token",
    }


def test_create_answer_with_only_an_id_counts_as_queued(
    client: IttybitClient, api_server: HTTPServer
) -> None:
    api_server.expect_request("/jobs", method="POST").respond_with_json({"id": "job_new"})
    state = client.create_job(
        input_url="https://example.com/in.mp4",
        metadata={},
        webhook_url="https://hooks.example.com/x",
        idempotency_key="k",
    )
    assert (state.job_id, state.provider_status) == ("job_new", "pending")


def test_idempotency_key_is_stable_per_submission() -> None:
    assert idempotency_key("sub_1") == idempotency_key("sub_1")
    assert idempotency_key("sub_1") != idempotency_key("sub_2")
    assert idempotency_key("sub_é" * 100).isascii()
    assert len(idempotency_key("x" * 200)) < 64


def test_list_events_pages_after_an_event(client: IttybitClient, api_server: HTTPServer) -> None:
    page = {
        "object": "list",
        "data": [
            {
                "id": "evt_2",
                "object": "event",
                "kind": "job.succeeded",
                "data": {"id": "job_1", "status": "succeeded"},
                "created_at": 1_790_000_000,
            },
            {"id": "evt_3", "object": "event", "kind": "account.updated", "data": {}},
        ],
    }
    api_server.expect_request(
        "/events", query_string={"limit": "2", "order": "asc", "after": "evt_1"}
    ).respond_with_json(page, headers={"Has-More": "true"})
    result = client.list_events(after="evt_1", limit=2)
    assert [event.id for event in result.events] == ["evt_2", "evt_3"]
    first = result.events[0].state
    assert first is not None
    assert (first.job_id, first.status) == ("job_1", Status.SUCCEEDED)
    assert result.events[1].state is None
    assert result.has_more is True
    assert result.next_after == "evt_3"
    assert result.events[0].created_at == datetime.fromtimestamp(1_790_000_000, UTC)


def test_list_events_newest_first_sends_no_order(
    client: IttybitClient, api_server: HTTPServer
) -> None:
    """ittybit's default order is newest first: ``limit=1`` alone finds the newest event."""
    newest = {"id": "evt_9", "object": "event", "kind": "job.created", "data": {}}
    api_server.expect_request("/events", query_string={"limit": "1"}).respond_with_json(
        {"data": [newest], "has_more": True}
    )
    result = client.list_events(limit=1, order=None)
    assert [event.id for event in result.events] == ["evt_9"]
    assert result.has_more is True


def test_list_events_reads_has_more_from_a_link_header(
    client: IttybitClient, api_server: HTTPServer
) -> None:
    api_server.expect_request("/events").respond_with_json(
        {"data": []}, headers={"Link": '<https://api.example/events?after=evt_1>; rel="next"'}
    )
    assert client.list_events().has_more is True


def test_list_events_last_page(client: IttybitClient, api_server: HTTPServer) -> None:
    api_server.expect_request("/events").respond_with_json([])
    result = client.list_events()
    assert result.events == []
    assert result.has_more is False
    assert result.next_after is None


# --- a budget for the whole call: what the web process uses ---------------------------------


def test_a_budget_ends_a_hanging_call_with_its_retries(fake: FakeIttybit) -> None:
    """ittybit hangs (5 s here): the call gives up once the budget is spent, not per try."""
    fake.job("job_1", "processing")
    fake.hang.add("job_1")
    started = time.monotonic()
    with (
        IttybitClient(base_url=fake.url, api_key=API_KEY, timeout=10.0, budget=0.6) as client,
        pytest.raises(ApiUnavailable) as caught,
    ):
        client.get_job("job_1")
    spent = time.monotonic() - started
    # Functional, not a speed target: without the budget this takes three tries of 5 s.
    assert spent < 2.5, spent
    assert fake.requests["job_1"] == 1
    assert caught.value.message in ("GET /jobs/job_1: timed out", _over("job_1"))


def _over(job_id: str) -> str:
    return f"GET /jobs/{job_id}: no answer within the 0.6s budget"


def test_a_budget_does_not_wait_out_a_backoff_it_cannot_afford(fake: FakeIttybit) -> None:
    fake.script("job_1", Scripted(503), Scripted(503), Scripted(503))
    waits: list[float] = []
    with (
        IttybitClient(
            base_url=fake.url,
            api_key=API_KEY,
            budget=0.6,
            retry=RetryPolicy(attempts=3, backoff=4.0),
            sleep=waits.append,
        ) as client,
        pytest.raises(ApiUnavailable) as caught,
    ):
        client.get_job("job_1")
    assert caught.value.message == _over("job_1")
    assert (fake.requests["job_1"], waits) == (1, [])


def test_a_budget_starts_again_with_each_call(fake: FakeIttybit) -> None:
    fake.job("job_1", "succeeded")
    with IttybitClient(base_url=fake.url, api_key=API_KEY, budget=0.5) as client:
        first = client.get_job("job_1")
        time.sleep(0.6)  # longer than the budget, between calls
        second = client.get_job("job_1")
    assert first == second


# --- API versions and the not-found codes ----------------------------------------------------


def test_accept_version_is_sent_on_every_request(api_server: HTTPServer) -> None:
    seen: list[str | None] = []

    def answer(request: Request) -> Response:
        seen.append(request.headers.get("Accept-Version"))
        if request.path == "/events":
            return Response(json.dumps({"data": []}), 200, content_type="application/json")
        job = {"id": "job_v", "status": "queued"}
        return Response(json.dumps(job), 200, content_type="application/json")

    api_server.expect_request(re.compile("^/(jobs|events)")).respond_with_handler(answer)
    base = api_server.url_for("")
    with IttybitClient(base_url=base, api_key=API_KEY, api_version="2025-08-20") as versioned:
        versioned.get_job("job_v")
        versioned.list_events()
        versioned.create_job(
            input_url="https://in.example.com/a.mp4",
            metadata={},
            webhook_url="https://hooks.example.com/w",
            idempotency_key="k",
        )
    with IttybitClient(base_url=base, api_key=API_KEY) as plain:
        plain.get_job("job_v")
    assert seen == ["2025-08-20", "2025-08-20", "2025-08-20", None]


def test_settings_give_the_client_its_version(api_server: HTTPServer) -> None:
    from config.settings import Settings
    from receiver.ittybit.client import client_from_settings

    env = {"APP_ENV": "test", "ITTYBIT_API_URL": api_server.url_for(""), "ITTYBIT_API_KEY": "k"}
    with client_from_settings(Settings.from_env({**env, "ITTYBIT_API_VERSION": "2025-08-20"})) as c:
        assert c._http.headers["Accept-Version"] == "2025-08-20"
    with client_from_settings(Settings.from_env(env)) as c:
        assert "Accept-Version" not in c._http.headers


@pytest.mark.parametrize(
    "body",
    [
        {"error": "task_not_found", "message": "no such task"},
        {"error": {"kind": "task_not_found", "message": "no such task"}},
        {"code": "task_not_found"},
    ],
)
def test_a_404_naming_the_task_missing_is_final_on_any_path(
    client: IttybitClient, fake: FakeIttybit, body: dict[str, Any]
) -> None:
    # The staging API answers for tasks on /jobs too: its not-found is the last word.
    fake.script("task_gone", Scripted(404, body))
    fake.tasks["task:task_gone"] = {"id": "task_gone", "status": "completed"}
    with pytest.raises(JobNotFound):
        client.get_job("task_gone")
    assert fake.requests == {"task_gone": 1}


@pytest.mark.parametrize("code", ["not_found", "job_not_found"])
def test_a_404_naming_no_task_on_jobs_still_tries_tasks(
    client: IttybitClient, fake: FakeIttybit, code: str
) -> None:
    # The jobs API says job_not_found for an older task id: only /tasks knows it.
    fake.script("task_old", Scripted(404, {"error": {"code": code}}))
    fake.tasks["task:task_old"] = {"id": "task_old", "status": "completed"}
    assert client.get_job("task_old").status is Status.SUCCEEDED
    assert fake.requests == {"task_old": 1, "task:task_old": 1}


def test_a_404_on_tasks_is_not_found_whatever_it_says(
    client: IttybitClient, fake: FakeIttybit
) -> None:
    fake.script("task:task_x", Scripted(404, {"error": {"code": "job_not_found"}}))
    with pytest.raises(JobNotFound):
        client.get_job("task_x")
