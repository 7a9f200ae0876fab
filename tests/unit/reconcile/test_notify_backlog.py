"""A backlog of notifications is claimed in bounded work, and a batch is recorded as one.

An application down for a day leaves thousands of notifications pending. When it comes
back, each claim must read the few it leases, not the whole backlog once per row: the
check that a row is the first pending one of its submission to its endpoint once scanned
the endpoint's pending rows for every candidate (quadratic in the backlog). The work of a
claim is measured as the database counts it, never in seconds: SQLite's virtual machine
steps (a progress handler), PostgreSQL's buffer reads (``EXPLAIN (ANALYZE, BUFFERS)`` of
the very statements the claim ran). Tables carry no statistics (a new database), or
statistics taken before the burst, when every notification was delivered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.engine import Engine

from receiver.flows.endpoints import add_endpoint
from receiver.store.models import Notification, NotificationAttempt, NotifyEndpoint
from reconcile.notifier import Attempt, AttemptResult, Notifier, Tally
from reconcile.notify_claims import Leased, claim_due, due_endpoints, peek_due

_notifications = Notification.__table__  # type: ignore[attr-defined]
_attempts = NotificationAttempt.__table__  # type: ignore[attr-defined]
_endpoints = NotifyEndpoint.__table__  # type: ignore[attr-defined]
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
#: The backlogs compared: ten times the rows must not take three times the work.
SMALL, LARGE = 200, 2000


def _endpoint(engine: Engine, url: str = "https://app.example.com/hooks") -> str:
    with engine.begin() as conn:
        return str(add_endpoint(conn, url, now=NOW - timedelta(days=1))["id"])


def _queue(engine: Engine, endpoint_id: str, start: int, stop: int, *, tag: str = "msg") -> None:
    """Add pending notifications for submissions ``start``..``stop``: one each, and a second
    one (waiting behind the first) for every tenth submission."""
    rows = []
    for n in range(start, stop):
        for step in range(2 if n % 10 == 0 else 1):
            rows.append(
                {
                    "message_id": f"{tag}_{n}_{step}",
                    "submission_id": f"sub_{n}",
                    "endpoint": "https://app.example.com/hooks",
                    "endpoint_id": endpoint_id,
                    "event_type": "submission.succeeded",
                    "payload": "{}",
                    "status": "pending",
                    "attempts": 0,
                    "created_at": NOW - timedelta(hours=1),
                    "next_attempt_at": NOW - timedelta(hours=1),
                }
            )
    with engine.begin() as conn:
        conn.execute(sa.insert(_notifications), rows)


def _claim(conn: Connection, endpoint_id: str) -> list[Leased]:
    """What the notifier's claim runs: look, find the endpoints with rows due, lease four."""
    assert peek_due(conn, now=NOW)
    assert endpoint_id in due_endpoints(conn, now=NOW)
    return claim_due(
        conn, now=NOW, limit=4, owner="test", lease_seconds=60, endpoint_id=endpoint_id
    )


@contextmanager
def _rolled_back(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            yield conn
        finally:
            transaction.rollback()


def _claim_work(engine: Engine, endpoint_id: str) -> int:
    """Return the work one claim costs the database (rolled back, so it can be repeated)."""
    if engine.dialect.name == "sqlite":
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0  # go on

        with _rolled_back(engine) as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            driver.set_progress_handler(count, 100)
            try:
                leased = _claim(conn, endpoint_id)
            finally:
                driver.set_progress_handler(None, 0)
        assert len(leased) == 4
        return steps[0]
    ran: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        ran.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", keep)
    try:
        with _rolled_back(engine) as conn:
            assert len(_claim(conn, endpoint_id)) == 4
    finally:
        sa.event.remove(engine, "before_cursor_execute", keep)
    blocks = 0
    with _rolled_back(engine) as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        for statement, parameters in ran:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters)
            [[document]] = cursor.fetchall()
            top = (document if isinstance(document, list) else json.loads(document))[0]["Plan"]
            blocks += top["Shared Hit Blocks"] + top["Shared Read Blocks"]
    return blocks


def _with_statistics_of_the_quiet_past(engine: Engine, endpoints: list[str]) -> None:
    """Add 500 delivered notifications and gather statistics: a table whose statistics were
    taken before the burst, when none was pending."""
    _queue(engine, endpoints[0], 100_000, 100_500, tag="old")
    with engine.begin() as conn:
        conn.execute(sa.update(_notifications).values(status="delivered"))
        conn.exec_driver_sql("ANALYZE")


@pytest.mark.parametrize("statistics", ["none", "taken before the burst"])
def test_a_claim_costs_no_more_for_a_backlog_of_2000_than_for_one_of_200(
    engine: Engine, statistics: str
) -> None:
    # Three endpoints, as a claim finds them: the one claimed for has a third of the rows.
    endpoints = [_endpoint(engine, f"https://app{n}.example.com/hooks") for n in range(3)]
    if statistics != "none":
        _with_statistics_of_the_quiet_past(engine, endpoints)
    for endpoint_id in endpoints:
        _queue(engine, endpoint_id, 0, SMALL, tag=endpoint_id)
    small = _claim_work(engine, endpoints[0])
    for endpoint_id in endpoints:
        _queue(engine, endpoint_id, SMALL, LARGE, tag=endpoint_id)
    large = _claim_work(engine, endpoints[0])

    assert small > 0
    assert large < 3 * small, f"a claim did {large} units of work for {LARGE}, {small} for {SMALL}"


def test_only_the_first_pending_notification_of_each_queue_is_claimed(engine: Engine) -> None:
    endpoint_id = _endpoint(engine)
    other = _endpoint(engine, "https://other.example.com/hooks")
    _queue(engine, endpoint_id, 0, 30)
    with engine.begin() as conn:
        # sub_20's second goes to the other endpoint: a queue of its own, not behind the first.
        conn.execute(
            sa.update(_notifications)
            .where(_notifications.c.message_id == "msg_20_1")
            .values(endpoint_id=other)
        )
        # sub_0's first is delivered: its second is now the head of the queue.
        conn.execute(
            sa.update(_notifications)
            .where(_notifications.c.message_id == "msg_0_0")
            .values(status="delivered")
        )
    with engine.begin() as conn:
        leased = claim_due(conn, now=NOW, limit=100, owner="test", lease_seconds=60)
        # msg_10_1 is not leased, but waits behind sub_10's first: nothing more to lease.
        assert claim_due(conn, now=NOW, limit=100, owner="other", lease_seconds=60) == []
        assert not peek_due(conn, now=NOW)
    claimed = {row.message_id for row in leased}
    waiting = {"msg_10_1"}  # behind sub_10's first, still pending
    expected = {f"msg_{n}_0" for n in range(1, 30)} | {"msg_0_1", "msg_20_1"}
    assert claimed == expected
    assert not claimed & waiting


def _leased(engine: Engine, count: int) -> tuple[Notifier, list[Leased]]:
    endpoint_id = _endpoint(engine)
    _queue(engine, endpoint_id, 1, count + 1)
    notifier = Notifier(engine, max_age=86400, owner="me", clock=lambda: NOW)
    with engine.begin() as conn:
        rows = claim_due(conn, now=NOW, limit=count, owner="me", lease_seconds=60)
    assert len(rows) == count
    return notifier, rows


def _delivered(at: datetime) -> Attempt:
    return Attempt(AttemptResult.DELIVERED, at, 0.01, status=204, response="ok")


def test_a_batch_is_recorded_per_row_and_a_lease_taken_over_is_left_alone(
    engine: Engine,
) -> None:
    notifier, rows = _leased(engine, 3)
    first, second, third = rows
    with engine.begin() as conn:  # the second's lease ran out and another notifier took it
        conn.execute(
            sa.update(_notifications)
            .where(_notifications.c.id == second.id)
            .values(lease_owner="someone else")
        )
    failed = Attempt(AttemptResult.FAILED, NOW, 0.02, status=500, error="HTTP 500")
    tally = Tally()
    times = [NOW - timedelta(seconds=3), NOW - timedelta(seconds=2)]
    with notifier:
        notifier._record(
            [(first, _delivered(times[0])), (second, _delivered(times[1])), (third, failed)],
            tally,
        )

    assert (tally.delivered, tally.failed, tally.dead) == (1, 1, 0)
    with engine.connect() as conn:
        stored = {
            row.id: row
            for row in conn.execute(
                sa.select(_notifications).where(_notifications.c.id.in_([row.id for row in rows]))
            )
        }
        attempts = conn.execute(
            sa.select(_attempts.c.notification_id, _attempts.c.status_code).order_by(_attempts.c.id)
        ).all()
    assert stored[first.id].status == "delivered"
    assert stored[first.id].last_attempt_at == times[0]
    assert stored[first.id].lease_owner is None
    assert (stored[second.id].status, stored[second.id].lease_owner) == (
        "pending",
        "someone else",
    )
    assert (stored[third.id].status, stored[third.id].last_status) == ("pending", 500)
    assert stored[third.id].next_attempt_at > NOW
    # Every attempt is kept, the one whose lease was lost too, in the batch's order.
    assert attempts == [(first.id, 204), (second.id, 204), (third.id, 500)]


def test_an_endpoint_that_fails_then_succeeds_in_one_batch_has_both_told(engine: Engine) -> None:
    notifier, rows = _leased(engine, 3)
    failed = Attempt(AttemptResult.UNREACHABLE, NOW, 0.0, error="ConnectError: refused")
    with notifier:
        notifier._record(
            [(rows[0], failed), (rows[1], _delivered(NOW)), (rows[2], _delivered(NOW))], Tally()
        )
    with engine.connect() as conn:
        endpoint = conn.execute(sa.select(_endpoints)).one()
    # Recovered by the success after the failure: healthy, its last success kept.
    assert endpoint.failing_since is None
    assert endpoint.last_success_at == NOW
    assert endpoint.last_failure == "ConnectError: refused"


def test_successes_in_one_batch_keep_the_latest_success(engine: Engine) -> None:
    notifier, rows = _leased(engine, 3)
    times = [NOW - timedelta(seconds=s) for s in (5, 1, 3)]
    with notifier:
        notifier._record(
            [(row, _delivered(at)) for row, at in zip(rows, times, strict=True)], Tally()
        )
    with engine.connect() as conn:
        endpoint = conn.execute(sa.select(_endpoints)).one()
        statuses = conn.execute(sa.select(_notifications.c.status)).scalars().all()
    assert endpoint.last_success_at == max(times)
    assert statuses == ["delivered"] * 3


@pytest.mark.parametrize("size", [1, 4])
def test_a_batch_costs_the_same_statements_whatever_its_size(engine: Engine, size: int) -> None:
    notifier, rows = _leased(engine, size)
    statements: list[str] = []

    def keep(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement.split(None, 1)[0].upper())

    sa.event.listen(engine, "before_cursor_execute", keep)
    try:
        with notifier:
            notifier._record([(row, _delivered(NOW)) for row in rows], Tally())
    finally:
        sa.event.remove(engine, "before_cursor_execute", keep)
    # The attempts in one INSERT, the deliveries read and written in two, the health in two.
    assert [s for s in statements if s in ("INSERT", "UPDATE", "SELECT")] == [
        "INSERT",
        "SELECT",
        "UPDATE",
        "SELECT",
        "UPDATE",
    ]
