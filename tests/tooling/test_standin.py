"""The local ittybit stand-in: its API, its job clock and its delivery faults."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from flask.testing import FlaskCliRunner
from werkzeug.serving import WSGIRequestHandler, make_server

from devtools.processes import ROOT, base_env, free_port
from devtools.standin import DEFAULT_API_KEY, Standin, StandinConfig, running
from devtools.standin.clock import Clock
from receiver.core.jobstate import normalise, parse_timestamp
from receiver.core.signing import verify_standard_webhook
from receiver.store.models import Status
from tests.helpers import WEBHOOK_KEY, WEBHOOK_SECRET

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

AUTH = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
FAST: dict[str, Any] = {"step": 0.02, "retry_base": 0.02, "retry_max_delay": 0.1}
#: The path of a per-submission webhook URL, whose last part is a signed token.
HOOK = "/webhooks/ittybit/"
TOKEN = "eyJzIjoic3ViXzEiLCJ1IjoidXNlcl8xIn0.aV-3Im9ezUMPcvCLDXPa3K0P6M4"


class _Quiet(WSGIRequestHandler):
    disable_nagle_algorithm = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


@dataclass
class Receiver:
    """A webhook receiver that records deliveries and answers with the statuses it is given."""

    answers: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        with self.lock:
            self.received.append((headers, body))
            status = self.answers.pop(0) if self.answers else 200
        start_response(f"{status} Answer", [("Content-Type", "application/json")])
        outcome = "applied" if status < 300 else "refused"
        return [json.dumps({"outcome": outcome}).encode()]

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for _, body in self.received]


@contextmanager
def serve(app: Receiver, port: int = 0) -> Iterator[str]:
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    app = Receiver()
    with serve(app) as url:
        yield app, url


@pytest.fixture
def start_standin() -> Iterator[Callable[..., Standin]]:
    """Start stand-ins with quick steps and retries, changed by the options given."""
    started: list[Standin] = []

    def start(**options: Any) -> Standin:
        standin = Standin(StandinConfig(**{**FAST, **options})).start()
        started.append(standin)
        return standin

    yield start
    for standin in started:
        standin.close()


def create(
    standin: Standin,
    input_url: str = "https://example.com/in.mp4",
    *,
    key: str | None = None,
    webhook_url: str | None = None,
    **extra: Any,
) -> httpx.Response:
    body: dict[str, Any] = {"input": input_url, "kind": "video", **extra}
    if webhook_url:
        body["webhook_url"] = webhook_url
    headers = dict(AUTH)
    if key:
        headers["Idempotency-Key"] = key
    return httpx.post(f"{standin.url}/jobs", json=body, headers=headers)


def test_api_requires_the_bearer_key(start_standin: Callable[..., Standin]) -> None:
    standin = start_standin()
    anonymous = httpx.post(f"{standin.url}/jobs", json={"input": "https://e.com/a.mp4"})
    wrong = httpx.get(f"{standin.url}/jobs", headers={"Authorization": "Bearer nope"})
    assert anonymous.status_code == 401
    assert wrong.status_code == 401
    assert anonymous.json()["error"] == "unauthorized"
    assert standin.stats().jobs == 0


def test_create_then_read_job_and_task(start_standin: Callable[..., Standin]) -> None:
    standin = start_standin(step=60)
    created = create(
        standin,
        metadata={"submission_id": "sub_1", "user_id": "user_1"},
        webhook_url="http://127.0.0.1:9/hook",
    )
    assert created.status_code == 201
    job = created.json()
    assert job["id"].startswith("job_")
    assert job["object"] == "job"
    assert job["status"] == "queued"
    assert job["metadata"] == {"submission_id": "sub_1", "user_id": "user_1"}
    assert job["webhook_url"] == "http://127.0.0.1:9/hook"
    assert job["output"] is None

    fetched = httpx.get(f"{standin.url}/jobs/{job['id']}", headers=AUTH)
    assert fetched.status_code == 200
    assert fetched.json() == job

    task_id = job["tasks"][0]["id"]
    assert task_id.startswith("task_")
    task = httpx.get(f"{standin.url}/tasks/{task_id}", headers=AUTH).json()
    assert (task["object"], task["status"]) == ("task", "queued")

    assert httpx.get(f"{standin.url}/jobs/job_missing", headers=AUTH).status_code == 404
    assert httpx.get(f"{standin.url}/tasks/task_missing", headers=AUTH).status_code == 404
    assert standin.request_counts()[f"GET /jobs/{job['id']}"] == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b"[]", 422),
        (b'{"kind": "video"}', 422),
        (b'{"input": "ftp://example.com/a.mp4"}', 422),
        (b'{"input": "https://example.com/a.mp4", "metadata": []}', 422),
        (b'{"input": "https://example.com/a.mp4", "webhook_url": "nope"}', 422),
    ],
)
def test_create_refuses_bad_bodies(
    body: bytes, status: int, start_standin: Callable[..., Standin]
) -> None:
    standin = start_standin(step=60)
    response = httpx.post(
        f"{standin.url}/jobs",
        content=body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == status
    assert standin.stats().jobs == 0


def test_idempotency_key_returns_the_original_job(start_standin: Callable[..., Standin]) -> None:
    standin = start_standin(step=60)
    first = create(standin, key="submit-sub_1")
    again = create(standin, "https://example.com/other.mp4", key="submit-sub_1")
    other = create(standin, key="submit-sub_2")
    unkeyed = [create(standin).json()["id"] for _ in range(2)]

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["input"] == "https://example.com/in.mp4"
    assert other.json()["id"] != first.json()["id"]
    assert len(set(unkeyed)) == 2
    assert standin.stats().jobs == 4


def test_concurrent_creates_with_one_key_make_one_job(
    start_standin: Callable[..., Standin],
) -> None:
    standin = start_standin(step=60)
    barrier = threading.Barrier(8)
    ids: list[str] = []

    def submit() -> None:
        barrier.wait()
        ids.append(create(standin, key="same-key").json()["id"])

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 8
    assert len(set(ids)) == 1
    assert standin.stats().jobs == 1


def test_jobs_run_to_their_final_state_with_increasing_timestamps(
    start_standin: Callable[..., Standin],
) -> None:
    standin = start_standin()
    inputs = {
        "https://example.com/ok.mp4": Status.SUCCEEDED,
        "https://example.com/please-fail.mp4": Status.FAILED,
        "https://example.com/cancel-me.mp4": Status.CANCELLED,
    }
    ids = {create(standin, url).json()["id"]: expected for url, expected in inputs.items()}
    assert standin.wait_idle(10)

    truth = standin.jobs()
    for job_id, expected in ids.items():
        state = normalise(truth[job_id])
        assert state.status is expected
        assert state.job_id == job_id
        if expected is Status.SUCCEEDED:
            assert state.output_url == f"https://cdn.standin.invalid/{job_id}/output.mp4"
            assert state.error is None
        else:
            assert state.output_url is None
            assert state.error
        assert truth[job_id]["finished_at"] == truth[job_id]["updated_at"]

    events = httpx.get(
        f"{standin.url}/events", params={"limit": 100, "order": "asc"}, headers=AUTH
    ).json()
    for job_id in ids:
        mine = [event for event in events["data"] if event["data"]["id"] == job_id]
        kinds = [event["kind"] for event in mine]
        assert kinds[:2] == ["job.created", "job.processing"]
        assert len(kinds) == 3
        stamps = [parse_timestamp(event["data"]["updated_at"]) for event in mine]
        assert stamps == sorted(stamps)
        assert len(set(stamps)) == 3


def test_stuck_inputs_never_finish(start_standin: Callable[..., Standin]) -> None:
    standin = start_standin()
    job_id = create(standin, "https://example.com/stuck.mp4").json()["id"]
    assert standin.wait_idle(10)
    assert standin.jobs()[job_id]["status"] == "processing"


def test_lists_page_with_has_more_and_link(start_standin: Callable[..., Standin]) -> None:
    standin = start_standin(step=60)
    ids = [create(standin).json()["id"] for _ in range(3)]
    first = httpx.get(f"{standin.url}/jobs", params={"limit": 2}, headers=AUTH)
    assert [job["id"] for job in first.json()["data"]] == ids[:2]
    assert first.headers["Has-More"] == "true"
    assert f"after={ids[1]}" in first.headers["Link"]
    rest = httpx.get(f"{standin.url}/jobs", params={"after": ids[1]}, headers=AUTH)
    assert [job["id"] for job in rest.json()["data"]] == ids[2:]
    assert rest.headers["Has-More"] == "false"

    events = httpx.get(f"{standin.url}/events", params={"order": "asc"}, headers=AUTH).json()
    events = events["data"]
    assert [event["kind"] for event in events] == ["job.created"] * 3
    after = httpx.get(
        f"{standin.url}/events", params={"order": "asc", "after": events[0]["id"]}, headers=AUTH
    )
    assert [event["id"] for event in after.json()["data"]] == [e["id"] for e in events[1:]]
    unknown = httpx.get(f"{standin.url}/events", params={"after": "evt_x"}, headers=AUTH)
    assert unknown.status_code == 400
    queued = httpx.get(f"{standin.url}/jobs", params={"status": "succeeded"}, headers=AUTH)
    assert queued.json()["data"] == []


def test_delivers_each_status_change_in_order(
    receiver: tuple[Receiver, str], start_standin: Callable[..., Standin]
) -> None:
    app, url = receiver
    standin = start_standin()
    created = create(standin, webhook_url=f"{url}/hook", metadata={"submission_id": "sub_1"})
    job_id = created.json()["id"]
    assert standin.wait_idle(10)
    stats = standin.stats()

    bodies = app.bodies()
    assert [(body["id"], body["status"]) for body in bodies] == [
        (job_id, "processing"),
        (job_id, "succeeded"),
    ]
    assert all(body["metadata"] == {"submission_id": "sub_1"} for body in bodies)
    assert "webhook_url" not in bodies[0]
    # Without a secret there are no signature headers.
    assert all("webhook-signature" not in headers for headers, _ in app.received)
    assert (stats.planned, stats.delivered, stats.dropped, stats.duplicated) == (2, 2, 0, 0)
    assert stats.outcomes == {"applied": 2}


def test_drop_rate_one_delivers_nothing(
    receiver: tuple[Receiver, str], start_standin: Callable[..., Standin]
) -> None:
    app, url = receiver
    standin = start_standin(drop_rate=1.0)
    for _ in range(3):
        create(standin, webhook_url=url)
    assert standin.wait_idle(10)
    stats = standin.stats()
    records = standin.deliveries()
    assert app.received == []
    assert (stats.planned, stats.dropped, stats.attempts) == (6, 6, 0)
    assert {record.state for record in records} == {"dropped"}


def test_duplicate_rate_one_sends_every_delivery_twice(
    receiver: tuple[Receiver, str], start_standin: Callable[..., Standin]
) -> None:
    app, url = receiver
    standin = start_standin(duplicate_rate=1.0)
    create(standin, webhook_url=url)
    assert standin.wait_idle(10)
    stats = standin.stats()
    bodies = [body for _, body in app.received]
    assert len(bodies) == 4
    assert bodies[0] == bodies[1] and bodies[2] == bodies[3]
    assert bodies[0] != bodies[2]
    assert (stats.duplicated, stats.delivered) == (2, 4)


def test_reorder_sends_processing_after_the_final_state(
    receiver: tuple[Receiver, str], start_standin: Callable[..., Standin]
) -> None:
    app, url = receiver
    standin = start_standin(reorder_rate=1.0)
    create(standin, webhook_url=url)
    create(standin, "https://example.com/fail.mp4", webhook_url=url)
    assert standin.wait_idle(10)
    stats = standin.stats()
    records = standin.deliveries()
    reordered = [record for record in records if record.reordered]
    for late in reordered:
        final = next(r for r in records if r.job_id == late.job_id and r.status != "processing")
        assert late.order is not None and final.order is not None
        assert late.order > final.order
    by_job: dict[str, list[dict[str, Any]]] = {}
    for body in app.bodies():
        by_job.setdefault(body["id"], []).append(body)
    assert sorted([body["status"] for body in bodies] for bodies in by_job.values()) == [
        ["failed", "processing"],
        ["succeeded", "processing"],
    ]
    for final, late in by_job.values():
        assert parse_timestamp(late["updated_at"]) < parse_timestamp(final["updated_at"])
    assert stats.reordered == 2
    assert [record.status for record in reordered] == ["processing", "processing"]


def test_a_new_session_makes_new_ids_but_the_seed_keeps_its_faults(
    receiver: tuple[Receiver, str],
) -> None:
    _, url = receiver

    def session(seed: int) -> tuple[list[str], set[str], list[tuple[int, str, int, str, bool]]]:
        """Run 12 jobs; return their ids, their event ids and the faults met by job number."""
        config = StandinConfig(
            seed=seed, drop_rate=0.3, duplicate_rate=0.3, reorder_rate=0.3, **FAST
        )
        with running(config) as standin:
            ids = [
                create(standin, f"https://example.com/{number}.mp4", webhook_url=url).json()["id"]
                for number in range(12)
            ]
            assert standin.wait_idle(10)
            records = standin.deliveries()
        number = {job_id: index for index, job_id in enumerate(ids)}
        faults = sorted((number[r.job_id], r.status, r.copy, r.state, r.reordered) for r in records)
        return ids, {r.event_id for r in records}, faults

    first_ids, first_events, first = session(7)
    again_ids, again_events, again = session(7)
    _, _, other = session(8)

    assert len(set(first_ids)) == 12
    assert set(first_ids).isdisjoint(again_ids)
    # Event ids are the webhook-ids the receiver deduplicates on: they must be new too.
    assert first_events.isdisjoint(again_events)
    assert first == again
    assert {row[3] for row in first} >= {"dropped", "delivered"}
    assert any(row[2] == 2 for row in first)
    assert any(row[4] for row in first)
    assert first != other


def test_submit_against_a_restarted_standin_with_the_same_seed(
    app_config: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    port = free_port()
    app_config["ITTYBIT_API_URL"] = f"http://127.0.0.1:{port}"
    app_config["ITTYBIT_API_KEY"] = DEFAULT_API_KEY
    runner: FlaskCliRunner = request.getfixturevalue("runner")
    job_ids = []
    for number in (1, 2):
        # The same port and seed each time: a developer restarting `python -m devtools.standin`.
        with running(StandinConfig(seed=5, step=60), port=port):
            result = runner.invoke(
                args=[
                    "submit",
                    "--input",
                    f"https://example.com/uploads/{number}.mp4",
                    "--user-id",
                    "user_1",
                    "--submission-id",
                    f"sub_{number}",
                ]
            )
        assert result.exit_code == 0, result.output
        job_ids.append(json.loads(result.stdout)["job_id"])
    assert job_ids[0] != job_ids[1]


def test_retries_5xx_with_backoff_then_gives_up(
    receiver: tuple[Receiver, str], start_standin: Callable[..., Standin]
) -> None:
    app, url = receiver
    app.answers = [503, 500, 200]
    standin = start_standin(step=0.02, retry_base=0.01, max_attempts=3)
    create(standin, webhook_url=url)
    assert standin.wait_idle(10)
    first = standin.stats()
    records = standin.deliveries()
    app.answers = [503, 503, 503]
    create(standin, "https://example.com/stuck.mp4", webhook_url=url)
    assert standin.wait_idle(10)
    second = standin.stats()

    assert records[0].attempts == 3
    assert records[0].state == "delivered"
    assert (first.attempts, first.retried, first.delivered, first.given_up) == (4, 2, 2, 0)
    assert (second.given_up, second.attempts) == (1, 7)
    assert [body["status"] for body in app.bodies()[:4]] == ["processing"] * 3 + ["succeeded"]


def test_a_refused_delivery_is_not_retried(
    receiver: tuple[Receiver, str], start_standin: Callable[..., Standin]
) -> None:
    app, url = receiver
    app.answers = [403]
    standin = start_standin()
    create(standin, webhook_url=url)
    assert standin.wait_idle(10)
    stats = standin.stats()
    assert (stats.refused, stats.delivered, stats.attempts, stats.retried) == (1, 1, 2, 0)


def test_retries_until_a_down_receiver_comes_back(start_standin: Callable[..., Standin]) -> None:
    port = free_port()
    app = Receiver()
    standin = start_standin(step=0.01, retry_base=0.05, retry_max_delay=0.2, max_attempts=50)
    create(standin, webhook_url=f"http://127.0.0.1:{port}/hook")
    deadline = time.monotonic() + 10
    while standin.stats().attempts < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert standin.stats().delivered == 0
    with serve(app, port):
        assert standin.wait_idle(10)
        stats = standin.stats()
    assert stats.retried >= 1
    assert (stats.delivered, stats.given_up) == (2, 0)
    assert [body["status"] for body in app.bodies()] == ["processing", "succeeded"]


def test_project_endpoint_gets_signed_event_envelopes(
    receiver: tuple[Receiver, str], start_standin: Callable[..., Standin]
) -> None:
    job_app, job_url = receiver
    project_app = Receiver()
    with serve(project_app) as project_url:
        standin = start_standin(webhook_secret=WEBHOOK_SECRET, project_url=project_url)
        job_id = create(standin, webhook_url=job_url).json()["id"]
        assert standin.wait_idle(10)

    envelopes = project_app.bodies()
    assert [(e["object"], e["kind"], e["data"]["id"]) for e in envelopes] == [
        ("event", "job.processing", job_id),
        ("event", "job.succeeded", job_id),
    ]
    project_ids = []
    for headers, body in project_app.received:
        project_ids.append(
            verify_standard_webhook(
                headers, body, keys=[WEBHOOK_KEY], now=time.time(), tolerance=60
            )
        )
    job_ids = [
        verify_standard_webhook(headers, body, keys=[WEBHOOK_KEY], now=time.time(), tolerance=60)
        for headers, body in job_app.received
    ]
    # One message id per event, whichever endpoint it goes to.
    assert project_ids == job_ids
    assert len(set(project_ids)) == 2
    assert normalise(envelopes[1]).event_id == envelopes[1]["id"]


def test_latency_delays_every_api_answer(start_standin: Callable[..., Standin]) -> None:
    standin = start_standin(latency=0.05, step=60)
    started = time.monotonic()
    response = httpx.get(f"{standin.url}/jobs", headers=AUTH)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.05


def test_stats_and_truth_over_http(start_standin: Callable[..., Standin]) -> None:
    standin = start_standin()
    job_id = create(standin).json()["id"]
    assert standin.wait_idle(10)
    stats = httpx.get(f"{standin.url}/_standin/stats").json()
    truth = httpx.get(f"{standin.url}/_standin/jobs").json()
    assert stats["jobs"] == 1
    assert truth[job_id]["status"] == "succeeded"


def test_config_refuses_bad_options() -> None:
    with pytest.raises(ValueError, match="drop_rate"):
        StandinConfig(drop_rate=1.5)
    with pytest.raises(ValueError, match="webhook_secret"):
        StandinConfig(project_url="http://127.0.0.1:1/hooks")
    with pytest.raises(ValueError, match="whsec_"):
        StandinConfig(webhook_secret="not-a-secret!")


def test_clock_runs_calls_in_due_order_and_wakes_for_a_sooner_one() -> None:
    clock = Clock()
    clock.start()
    ran: list[str] = []
    done = threading.Event()
    try:
        clock.call_later(5, lambda: ran.append("late"))
        time.sleep(0.05)  # the clock now sleeps until the late call is due
        clock.call_later(0.1, lambda: ran.append("second"))
        clock.call_later(0.05, lambda: ran.append("first"))
        clock.call_later(0.15, done.set)
        started = time.monotonic()
        assert done.wait(2)
        assert time.monotonic() - started < 1
    finally:
        clock.stop()
    assert ran == ["first", "second"]


def test_clock_survives_a_failing_call_and_drops_calls_on_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    clock.start()
    ran: list[str] = []
    done = threading.Event()

    def fail() -> None:
        message = f"could not post to http://127.0.0.1:9{HOOK}{TOKEN}"
        raise RuntimeError(message)

    try:
        clock.call_later(0, fail)
        clock.call_later(0.02, done.set)
        assert done.wait(2)
        clock.call_later(0.2, lambda: ran.append("after stop"))
    finally:
        clock.stop()
    clock.call_later(0, lambda: ran.append("stopped"))
    time.sleep(0.3)
    assert ran == []
    assert "stand-in task failed" in caplog.text
    # The traceback is logged, without the token its message carried.
    assert f"RuntimeError: could not post to http://127.0.0.1:9{HOOK}[token]" in caplog.text
    assert TOKEN not in caplog.text


def test_logs_show_webhook_urls_without_their_token(
    receiver: tuple[Receiver, str],
    caplog: pytest.LogCaptureFixture,
    start_standin: Callable[..., Standin],
) -> None:
    app, url = receiver
    app.answers = [503]
    hook = f"{url}{HOOK}{TOKEN}"
    down = f"http://127.0.0.1:{free_port()}{HOOK}{TOKEN}"
    caplog.set_level(logging.DEBUG)
    # Another command run in this process may have quietened httpx, which logs each URL.
    caplog.set_level(logging.DEBUG, logger="httpx")
    standin = start_standin(max_attempts=2)
    create(standin, webhook_url=hook)
    create(standin, "https://example.com/stuck.mp4", webhook_url=down)
    assert standin.wait_idle(10)
    over_http = [httpx.get(f"{standin.url}/_standin/{path}").text for path in ("stats", "jobs")]
    records = standin.deliveries()
    standin = start_standin(drop_rate=1.0)
    create(standin, webhook_url=hook)
    assert standin.wait_idle(10)

    assert len(app.received) == 3  # the token did reach the receiver: 503, then two 200s
    assert TOKEN not in caplog.text
    assert not any(TOKEN in text for text in over_http)
    assert not any(TOKEN in (record.error or "") for record in records)
    assert any(record.error for record in records)
    shown = f"{url}{HOOK}[token]"
    down_shown = f"{down.removesuffix(TOKEN)}[token]"
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("devtools.standin")]
    for expected in (
        ("attempt 1 failed (503), next in", f"processing to {shown}"),
        ("delivered, 200 applied:", f"processing to {shown}"),
        ("delivered, 200 applied:", f"succeeded to {shown}"),
        ("gave up after 2 attempts (ConnectError", f"processing to {down_shown}"),
        ("dropped", f"processing to {shown}"),
    ):
        assert any(line.startswith(expected[0]) and line.endswith(expected[1]) for line in lines), (
            expected,
            lines,
        )
    # httpx logs each request's URL too.
    assert any(r.name == "httpx" and shown in r.getMessage() for r in caplog.records)


def test_command_serves_until_interrupted_and_logs_no_token(
    receiver: tuple[Receiver, str],
) -> None:
    app, url = receiver
    port = free_port()
    command = [sys.executable, "-m", "devtools.standin", "--port", str(port), "--step", "20ms"]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=base_env({}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready.startswith(f"ittybit stand-in on http://127.0.0.1:{port} "), ready
        base = f"http://127.0.0.1:{port}"
        body = {"input": "https://example.com/in.mp4", "webhook_url": f"{url}{HOOK}{TOKEN}"}
        assert httpx.post(f"{base}/jobs", json=body, headers=AUTH).status_code == 201
        deadline = time.monotonic() + 10
        while len(app.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert [json.loads(body)["status"] for _, body in app.received] == ["processing", "succeeded"]
    assert json.loads(out.strip().splitlines()[-1])["delivered"] == 2
    assert TOKEN not in out + err
    assert "POST /jobs 201" in err
    delivered = [line for line in err.splitlines() if "delivered, 200 applied:" in line]
    assert len(delivered) == 2
    assert delivered[1].endswith(f"succeeded to {url}{HOOK}[token]")


def test_held_jobs_finish_on_cue(start_standin: Callable[..., Standin]) -> None:
    standin = start_standin(hold_finals=True)
    job_id = create(standin).json()["id"]
    stuck_id = create(standin, "https://example.com/stuck.mp4").json()["id"]
    assert standin.wait_idle(10)
    assert standin.jobs()[job_id]["status"] == "processing"
    finish = httpx.post(f"{standin.url}/_standin/finish")
    assert finish.json() == {"finishing": 1}
    assert standin.wait_idle(10)
    assert (standin.jobs()[job_id]["status"], standin.jobs()[stuck_id]["status"]) == (
        "succeeded",
        "processing",
    )
    assert standin.finish_held() == 0


def test_the_event_list_reads_both_ways_and_can_be_missing(
    start_standin: Callable[..., Standin],
) -> None:
    standin = start_standin(step=60)
    ids = [create(standin).json()["id"] for _ in range(3)]
    listed = [event["data"]["id"] for event in standin._machine.events()]
    assert listed == ids
    events = [event["id"] for event in standin._machine.events()]
    newest = httpx.get(f"{standin.url}/events", params={"limit": 1}, headers=AUTH)
    assert [event["id"] for event in newest.json()["data"]] == events[-1:]
    assert (newest.headers["Has-More"], newest.json()["has_more"]) == ("true", True)
    older = httpx.get(
        f"{standin.url}/events", params={"after": events[2], "limit": 5}, headers=AUTH
    )
    assert [event["id"] for event in older.json()["data"]] == [events[1], events[0]]
    before = httpx.get(
        f"{standin.url}/events", params={"order": "asc", "before": events[2]}, headers=AUTH
    )
    assert [event["id"] for event in before.json()["data"]] == events[:2]
    one = httpx.get(f"{standin.url}/events/{events[0]}", headers=AUTH)
    assert one.json()["kind"] == "job.created"
    assert isinstance(one.json()["created_at"], float)
    assert (
        httpx.get(f"{standin.url}/events", params={"limit": 101}, headers=AUTH).status_code == 400
    )
    counts = httpx.get(f"{standin.url}/_standin/requests").json()
    assert counts["GET /events"] == 4
    assert standin.requests_made("GET /events") == 5  # and GET /events/{id}

    missing = start_standin(event_list=False)
    assert httpx.get(f"{missing.url}/events", headers=AUTH).status_code == 404
    assert missing.requests_made() == 1


# --- the webhook endpoints resource ----------------------------------------------------------


def test_endpoints_resource_and_deliveries_signed_with_the_endpoint_secret(
    start_standin: Callable[..., Standin], receiver: tuple[Receiver, str]
) -> None:
    app, url = receiver
    standin = start_standin()
    api = f"{standin.url}/webhooks/endpoints"
    made = httpx.post(api, json={"url": f"{url}/webhooks/ittybit", "topics": ["task.succeeded"]})
    assert made.status_code == 401  # the key is needed here too
    made = httpx.post(
        api, json={"url": f"{url}/webhooks/ittybit", "topics": ["task.succeeded"]}, headers=AUTH
    )
    assert made.status_code == 201
    endpoint = made.json()
    assert endpoint["secret"].startswith("whsec_") and endpoint["status"] == "active"
    listed = httpx.get(api, headers=AUTH).json()["data"]
    assert [item["id"] for item in listed] == [endpoint["id"]]
    assert "secret" not in listed[0]
    one = f"{api}/{endpoint['id']}"
    patched = httpx.patch(one, json={"topics": ["task.failed"]}, headers=AUTH).json()
    assert patched["topics"] == ["task.failed"]
    assert httpx.patch(one, json={"status": "nope"}, headers=AUTH).status_code == 422

    assert create(standin).status_code == 201
    assert standin.wait_idle(10)
    received = list(app.received)
    assert [json.loads(body)["object"] for _, body in received] == ["event"] * 2
    key = standin_key(endpoint["secret"])
    for headers, body in received:
        verify_standard_webhook(headers, body, keys=(key,), now=time.time(), tolerance=60)

    httpx.patch(one, json={"status": "paused"}, headers=AUTH)
    assert create(standin).status_code == 201
    assert standin.wait_idle(10)
    assert len(app.received) == 2  # a paused endpoint is sent nothing
    assert httpx.delete(one, headers=AUTH).status_code == 204
    assert httpx.get(one, headers=AUTH).status_code == 404


def standin_key(secret: str) -> bytes:
    from config.settings import decode_webhook_secret

    return decode_webhook_secret(secret)


def test_without_job_webhooks_only_endpoints_are_sent_to(
    start_standin: Callable[..., Standin], receiver: tuple[Receiver, str]
) -> None:
    app, url = receiver
    standin = start_standin(job_webhooks=False)
    assert create(standin, webhook_url=f"{url}{HOOK}{TOKEN}").status_code == 201
    assert standin.wait_idle(10)
    assert app.received == []
    standin.endpoints.create(f"{url}/webhooks/ittybit", [])
    assert create(standin, webhook_url=f"{url}{HOOK}{TOKEN}").status_code == 201
    assert standin.wait_idle(10)
    assert [json.loads(body)["object"] for _, body in app.received] == ["event", "event"]
