"""GET /metrics under real gunicorn: several workers (multiprocess mode) give one answer,
and every request logs one JSON line.

Split from tests/unit/observe/test_metrics.py, which holds the in-process /metrics tests.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from devtools.processes import WebProcess
from receiver.core.signing import webhook_token
from receiver.store.engines import create_db_engine
from tests.helpers import (
    OTHER_WEBHOOK_KEY,
    SECRET_KEY,
    WEBHOOK_SECRET,
    add_submission,
    encode,
    job_payload,
    signed_headers,
)
from tests.unit.observe.test_metrics import METRICS_TOKEN, Samples, parse, value

# --- gunicorn: several workers, one answer --------------------------------------------------


def _booted(log: Path) -> list[int]:
    """Return the pids of the workers gunicorn booted so far, from its JSON log."""
    pids = []
    for line in log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        match = re.search(r"Booting worker with pid: (\d+)", json.loads(line)["message"])
        if match:
            pids.append(int(match.group(1)))
    return pids


def _http(method: str, url: str, body: bytes | None, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def server(gunicorn: Callable[..., WebProcess], database_url: str, tmp_path: Path) -> WebProcess:
    engine = create_db_engine_for(database_url)
    add_submission(engine, "sub_1")
    engine.dispose()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999999.db").write_bytes(b"left by a process long gone")
    return gunicorn(
        {
            "APP_ENV": "production",
            "DATABASE_URL": database_url,
            "SECRET_KEY": SECRET_KEY,
            "ITTYBIT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "WEB_CONCURRENCY": "2",
            "METRICS_TOKEN": METRICS_TOKEN,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
    )


def create_db_engine_for(database_url: str) -> Engine:
    from config.settings import Settings

    settings = Settings.from_env(
        {"APP_ENV": "test", "SECRET_KEY": SECRET_KEY, "DATABASE_URL": database_url}
    )
    return create_db_engine(settings)


def _scrape_http(base: str) -> Samples:
    request = urllib.request.Request(
        f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return parse(response.read().decode())


def _replace_worker(server: WebProcess, pid: int) -> None:
    """Stop one worker and wait until its replacement has loaded the app and counts itself."""
    booted = len(_booted(server.log_path))
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while (
        len(_booted(server.log_path)) == booted
        or value(_scrape_http(server.url), "jobhooks_web_workers") != 2
    ):
        if time.monotonic() > deadline:
            pytest.fail(f"gunicorn did not replace worker {pid}:\n{server.log_tail()}")
        time.sleep(0.1)


@pytest.mark.slow
def test_gunicorn_workers_add_up_and_log_one_json_line_per_request(
    server: WebProcess, tmp_path: Path
) -> None:
    base = server.url
    assert not (tmp_path / "metrics" / "counter_999999999.db").exists()
    token = webhook_token([SECRET_KEY], submission_id="sub_1", user_id="user_1")
    applied = encode(job_payload())
    signed = signed_headers(applied, msg_id="msg_applied")
    assert _http("POST", f"{base}/webhooks/ittybit/{token}", applied, signed) == 200
    forged = signed_headers(applied, key=OTHER_WEBHOOK_KEY)
    for _ in range(3):
        assert _http("POST", f"{base}/webhooks/ittybit", applied, forged) == 401
    for number in (1, 2):
        body = encode(job_payload(f"job_u{number}", submission_id=f"sub_u{number}"))
        headers = signed_headers(body, msg_id=f"msg_u{number}")
        assert _http("POST", f"{base}/webhooks/ittybit", body, headers) == 202

    # Both first workers go away: what they counted must still be in every answer.
    for pid in _booted(server.log_path)[:2]:
        _replace_worker(server, pid)
    for _ in range(2):
        assert _http("POST", f"{base}/webhooks/ittybit", applied, forged) == 401

    assert _http("GET", f"{base}/metrics", None, {}) == 401
    answers = [_scrape_http(base) for _ in range(4)]
    deliveries = "jobhooks_webhook_deliveries_total"
    for samples in answers:
        assert value(samples, deliveries, source="url", outcome="applied", status="200") == 1
        assert value(samples, deliveries, source="endpoint", outcome="none", status="401") == 5
        assert value(samples, deliveries, source="endpoint", outcome="unmatched", status="202") == 2
        failures = "jobhooks_webhook_verification_failures_total"
        assert value(samples, failures, source="endpoint", reason="bad_signature") == 5
        assert value(samples, "jobhooks_webhook_duration_seconds_count", source="endpoint") == 7
        # child_exit dropped the replaced workers' live gauges: two workers, not four.
        assert value(samples, "jobhooks_web_workers") == 2
        assert value(samples, "jobhooks_submissions", status="succeeded") == 1
        assert value(samples, "jobhooks_unmatched_events") == 2

    server.stop()
    everything = server.log_path.read_text()
    lines = [json.loads(line) for line in everything.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["logger"] == "jobhooks.request"]
    # Probes and scrapes that succeed are logged at debug; every delivery has its line.
    assert [line["status"] for line in requests] == [200, 401, 401, 401, 202, 202, 401, 401, 401]
    assert requests[0]["delivery_id"] == "msg_applied"
    assert requests[0]["path"] == "/webhooks/ittybit/[token]"
    assert len({line["request_id"] for line in requests}) == len(requests)
    assert token not in everything
    assert signed["webhook-signature"].removeprefix("v1,") not in everything
    assert METRICS_TOKEN not in everything
    assert SECRET_KEY not in everything
