"""The API under concurrency: one job for eight racing retries, pages that never repeat a row."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import Engine

from devtools.standin import Standin, StandinConfig
from receiver.store.models import Submission, utcnow
from tests.api_helpers import bearer, body, use_standin

_submissions = Submission.__table__  # type: ignore[attr-defined]
THREADS = 8


@pytest.fixture
def slow_standin(app_config: dict[str, Any], no_retry_waits: None) -> Iterator[Standin]:
    # Every answer takes 300 ms, so the eight requests overlap for certain.
    with Standin(StandinConfig(step=3600, latency=0.3)).start() as standin:
        use_standin(app_config, standin)
        yield standin


def race(app: Flask, request: Any) -> list[Any]:
    """Send ``request(client)`` from THREADS threads released at once; return the answers."""
    barrier = threading.Barrier(THREADS)
    answers: list[Any] = [None] * THREADS

    def run(index: int) -> None:
        client = app.test_client()
        barrier.wait()
        answers[index] = request(client)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


def count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_eight_retries_with_one_idempotency_key_make_one_submission_and_one_job(
    slow_standin: Standin, app: Flask, engine: Engine
) -> None:
    headers = {**bearer(app), "Idempotency-Key": "order-42"}
    answers = race(
        app,
        lambda client: client.post(
            "/api/v1/submissions", json=body(metadata={"order": "42"}), headers=headers
        ),
    )
    assert [answer.status_code for answer in answers] == [201] * THREADS
    assert len({answer.get_data() for answer in answers}) == 1  # the first answer, replayed
    replayed = [answer.headers.get("Idempotent-Replayed") for answer in answers]
    assert replayed.count("true") == THREADS - 1
    assert count(engine, "submissions") == 1
    assert count(engine, "api_idempotency") == 1
    assert slow_standin.stats().jobs == 1
    assert slow_standin.request_counts()["POST /jobs"] == 1


def test_eight_creates_of_one_submission_without_a_key_still_make_one_job(
    slow_standin: Standin, app: Flask, engine: Engine
) -> None:
    headers = bearer(app)
    answers = race(
        app, lambda client: client.post("/api/v1/submissions", json=body(), headers=headers)
    )
    statuses = Counter(answer.status_code for answer in answers)
    # One waits on ittybit (one slot: WEB_CONCURRENCY 2 less one kept for webhooks); the
    # others find the job made (200) or store the request for the worker (202).
    assert statuses[201] == 1, statuses
    assert set(statuses) <= {200, 201, 202}, statuses
    assert len({answer.get_json()["job_id"] for answer in answers} - {None}) == 1
    assert count(engine, "submissions") == 1
    assert slow_standin.stats().jobs == 1


def test_pages_see_every_row_once_while_rows_are_inserted_and_changed(
    app: Flask, engine: Engine
) -> None:
    headers = bearer(app)
    start = utcnow() - timedelta(days=1)
    # 1,000 rows, ten to a timestamp: the id must break the ties.
    originals = [
        {
            "submission_id": f"sub_{n:04d}",
            "user_id": "u",
            "input_url": "https://uploads.example.com/x.mp4",
            "status": "processing",
            "meta": {},
            "created_at": start,
            "updated_at": start + timedelta(seconds=n // 10),
        }
        for n in range(1000)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(_submissions), originals)

    stop = threading.Event()
    inserted: list[str] = []

    def write_meanwhile() -> None:
        n = 0
        while not stop.is_set() and n < 2000:
            now = utcnow()
            with engine.begin() as conn:
                conn.execute(
                    sa.insert(_submissions),
                    {
                        **originals[0],
                        "submission_id": f"new_{n}",
                        "created_at": now,
                        "updated_at": now,
                    },
                )
                # A row already seen changes: it moves to the front, never shows up again.
                conn.execute(
                    sa.update(_submissions)
                    .where(_submissions.c.submission_id == f"sub_{999 - n % 50:04d}")
                    .values(updated_at=now)
                )
            inserted.append(f"new_{n}")
            n += 1

    writer = threading.Thread(target=write_meanwhile)
    writer.start()
    seen: list[str] = []
    pages = 0
    try:
        client = app.test_client()
        cursor = None
        while True:
            query = "limit=100" + (f"&cursor={cursor}" if cursor else "")
            response = client.get(f"/api/v1/submissions?{query}", headers=headers)
            assert response.status_code == 200, response.get_json()
            page = response.get_json()
            seen += [item["submission_id"] for item in page["data"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
    finally:
        stop.set()
        writer.join(timeout=30)
    assert inserted, "nothing was inserted while paging"
    repeated = [name for name, times in Counter(seen).items() if times > 1]
    assert repeated == []
    originals_seen = [name for name in seen if name.startswith("sub_")]
    assert len(originals_seen) == 1000
    assert pages >= 10
