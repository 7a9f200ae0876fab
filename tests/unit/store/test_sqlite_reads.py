"""SQLite: reads never take, nor wait for, the write lock.

A long write (a reconcile claim, a prune batch, an import) holds SQLite's lock; probes,
scrapes and on-call commands that only read must answer meanwhile.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from receiver import create_app
from receiver.store.engines import get_engine
from tests.helpers import add_submission


@pytest.fixture
def sqlite_app(app_config: dict[str, Any], database_url: str) -> Iterator[Flask]:
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's write lock")
    # A writer would give up after 100 ms: a read that waited for the lock would fail.
    app = create_app({**app_config, "SQLITE_BUSY_TIMEOUT_MS": "100"})
    add_submission(get_engine(app))
    yield app
    get_engine(app).dispose()


@pytest.fixture
def write_lock_held(database_url: str) -> Iterator[None]:
    """Hold SQLite's write lock from another connection for the whole test."""
    path = sa.make_url(database_url).database or ""
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("UPDATE submissions SET error = 'being written' WHERE id = 1")
        taken.set()
        done.wait(30)
        holder.execute("ROLLBACK")
        holder.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert taken.wait(5)
    yield
    done.set()
    thread.join()


def test_probes_and_scrapes_answer_while_a_writer_holds_the_lock(
    sqlite_app: Flask, write_lock_held: None
) -> None:
    client = sqlite_app.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.get_json()
    scrape = client.get("/metrics").get_data(as_text=True)
    assert "jobhooks_database_up 1.0" in scrape
    assert 'jobhooks_submissions{status="pending"} 1.0' in scrape


def test_on_call_reads_answer_while_a_writer_holds_the_lock(
    sqlite_app: Flask, write_lock_held: None
) -> None:
    runner = sqlite_app.test_cli_runner()
    shown = runner.invoke(args=["submissions", "show", "sub_1"])
    assert shown.exit_code == 0, shown.output
    # The reader sees the last commit, not the writer's change in progress.
    assert json.loads(shown.stdout)["error"] is None
    listed = runner.invoke(args=["events", "list"])
    assert listed.exit_code == 0, listed.output
    url = runner.invoke(args=["webhook-url", "sub_1"])
    assert url.exit_code == 0, url.output


def test_a_write_still_waits_for_the_lock_and_then_gives_up(
    sqlite_app: Flask, write_lock_held: None
) -> None:
    added = sqlite_app.test_cli_runner().invoke(
        args=["submissions", "add", "sub_2", "--user-id", "u", "--input", "https://e.com/a.mp4"]
    )
    assert added.exit_code == 1
    assert "database is locked" in added.output
