"""Pruning beside live traffic: bounded batches, each its own short transaction, so a webhook
arriving meanwhile is never held up long (on SQLite, by the write lock a batch holds)."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import Engine

from receiver.flows import prune
from receiver.flows.prune import count_prunable, prune_events
from receiver.store.models import utcnow
from tests.helpers import encode, job_payload, signed_headers

ROWS = 20_000
SUBMISSIONS = 5_000
BATCH = 1_000
#: The longest a delivery may wait while a batch is being deleted.
MAX_WAIT = 0.100
#: Deliveries sent before the prune starts: the first compile and connect; the rest show
#: how long a delivery takes on this machine now, with no prune beside it.
WARM_UP = 5
UNHINDERED = 20


def fill_old_events(engine: Engine) -> None:
    """ROWS deliveries from 2020 over SUBMISSIONS submissions, made by the database itself."""
    columns = (
        "dedupe_key, received_at, source, job_id, submission_id, provider_status, body,"
        " headers, outcome"
    )
    if engine.dialect.name == "postgresql":
        numbers = "FROM generate_series(1, :rows) AS n"
        prefix = ""
    else:
        numbers = "FROM s"
        prefix = "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < :rows) "
    statement = (
        f"{prefix}INSERT INTO webhook_events ({columns})"
        f" SELECT 'old:' || n, :received_at, 'url', 'job_' || (n % {SUBMISSIONS}),"
        f" 'sub_' || (n % {SUBMISSIONS}), 'succeeded', '{{}}', '{{}}', 'unmatched' {numbers}"
    )
    received_at = "2020-01-01 00:00:00.000000"
    with engine.begin() as conn:
        conn.execute(sa.text(statement), {"rows": ROWS, "received_at": received_at})


def test_prune_deletes_in_batches_while_webhooks_keep_arriving(app: Flask, engine: Engine) -> None:
    fill_old_events(engine)
    before = utcnow() - timedelta(days=30)
    with engine.connect() as conn:
        assert count_prunable(conn, before=before) == ROWS - SUBMISSIONS

    warm = threading.Event()
    pruned = threading.Event()
    waits: list[tuple[float, float]] = []  # (started, seconds) of each delivery
    answers: list[int] = []

    def deliver() -> None:
        client = app.test_client()
        number = 0
        while not pruned.is_set():
            number += 1
            body = encode(job_payload(f"job_live_{number}", submission_id=f"new_{number}"))
            headers = signed_headers(body, msg_id=f"msg_live_{number}")
            started = time.monotonic()
            response = client.post("/webhooks/ittybit", data=body, headers=headers)
            waits.append((started, time.monotonic() - started))
            answers.append(response.status_code)
            if number == WARM_UP + UNHINDERED:
                warm.set()

    sender = threading.Thread(target=deliver, name="test-webhooks")
    sender.start()
    try:
        assert warm.wait(30)
        started = time.monotonic()
        deleted = prune_events(engine, before=before, batch=BATCH)
        seconds = time.monotonic() - started
    finally:
        pruned.set()
        sender.join(timeout=30)

    assert deleted == ROWS - SUBMISSIONS
    during = [wait for at, wait in waits if started <= at < started + seconds]
    # The deliveries really overlapped the prune's batches.
    assert len(during) >= 10, (len(during), seconds)
    assert set(answers) == {202}, set(answers)
    # A busy machine slows every delivery alike; what the prune may add is MAX_WAIT.
    unhindered = max(wait for _, wait in waits[WARM_UP : WARM_UP + UNHINDERED])
    assert max(during) <= unhindered + MAX_WAIT, (sorted(during)[-5:], unhindered, seconds)
    with engine.connect() as conn:
        total = conn.execute(sa.text("SELECT count(*) FROM webhook_events")).scalar_one()
        assert count_prunable(conn, before=before) == 0
    assert total == SUBMISSIONS + len(answers)


def test_on_sqlite_the_prune_leaves_the_write_lock_free_between_batches(
    app: Flask, engine: Engine
) -> None:
    """A writer that asks for the lock without waiting gets it often while the prune runs.

    SQLite hands its one write lock to whoever asks when it is free, not in turn: batches
    back to back starved webhooks (6 s waits in ``make bench``). The prune pauses after each
    batch as long as the batch held the lock.
    """
    if engine.dialect.name != "sqlite":
        return  # PostgreSQL's inserts do not wait on the deletes
    fill_old_events(engine)
    done = threading.Event()
    tries = granted = 0

    def prune() -> None:
        try:
            prune_events(engine, before=utcnow() - timedelta(days=30), batch=200)
        finally:
            done.set()

    thread = threading.Thread(target=prune)
    with engine.connect() as conn:
        driver = conn.connection.dbapi_connection
        assert driver is not None
        driver.execute("PRAGMA busy_timeout = 0")
        thread.start()
        while not done.is_set():
            tries += 1
            try:
                driver.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # database is locked
                pass
            else:
                granted += 1
                driver.execute("ROLLBACK")
            time.sleep(0.001)
        thread.join()
    assert tries > 20
    # Measured: about 70 % granted with the pause, about 20 % without it.
    assert granted / tries > 0.4, (granted, tries)


def test_after_each_batch_the_prune_rests_for_the_webhooks(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: webhooks at half the service's rate need about half the writer's time: they
    get two thirds of it (they queued up to 1.7 s behind a prune whose pause only matched a
    batch). PostgreSQL: back to back, the batches' work and WAL left webhooks at half the
    rate queueing up to 3.3 s; resting as long as each batch took, 50-390 ms."""
    pauses: list[float] = []
    monkeypatch.setattr(prune.time, "sleep", pauses.append)

    prune._rest_after_batch(engine, 0.005)

    if engine.dialect.name == "sqlite":
        assert pauses == [pytest.approx(0.010)]
    else:
        assert pauses == [pytest.approx(0.005)]
