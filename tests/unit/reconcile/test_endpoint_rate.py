"""An endpoint's rate is shared by every sending process, and delays no other endpoint."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from devtools.notify_app import NotifyApp
from receiver.flows.endpoints import add_endpoint, take_allowance
from receiver.store.models import NotifyEndpoint
from reconcile.notifier import Backoff, Notifier
from tests.notify_helpers import NOTIFY_SECRET, add_submissions, change, outbox_to

_endpoints = NotifyEndpoint.__table__  # type: ignore[attr-defined]


class Clock:
    """The notifiers' time, moved by hand: the bucket refills only when it moves."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC) + timedelta(seconds=1)

    def __call__(self) -> datetime:
        return self.now


def add(engine: Engine, url: str, *, rate: float | None = None) -> str:
    with engine.begin() as conn:
        made = add_endpoint(
            conn, url, now=datetime.now(UTC), event_types=("*",), secret=NOTIFY_SECRET, rate=rate
        )
    return str(made["id"])


def notifier(engine: Engine, clock: Callable[[], datetime], owner: str) -> Notifier:
    return Notifier(
        engine, max_age=3600.0, clock=clock, owner=owner, backoff=Backoff(first=0.05, cap=0.4)
    )


def succeed(engine: Engine, count: int) -> None:
    for submission_id in add_submissions(engine, count):
        change(engine, outbox_to(), submission_id, "succeeded")


def test_two_workers_together_send_no_more_than_the_endpoints_rate(engine: Engine) -> None:
    clock = Clock()
    with NotifyApp([NOTIFY_SECRET]) as app:
        add(engine, app.url, rate=2)
        succeed(engine, 10)
        with notifier(engine, clock, "worker-a") as a, notifier(engine, clock, "worker-b") as b:
            # One second's worth at a time, whichever worker sends it.
            assert (a.run().delivered, b.run().delivered) == (2, 0)
            clock.now += timedelta(seconds=1)
            assert (b.run().delivered, a.run().delivered) == (2, 0)
            clock.now += timedelta(milliseconds=500)
            assert a.run().delivered + b.run().delivered == 1
            clock.now += timedelta(seconds=60)  # an idle minute fills one second's worth only
            assert a.run().delivered + b.run().delivered == 2
        assert app.wait_applied(7, timeout=5)


def test_a_rate_limited_endpoint_delays_no_other(engine: Engine) -> None:
    clock = Clock()
    with NotifyApp([NOTIFY_SECRET]) as limited, NotifyApp([NOTIFY_SECRET]) as free:
        add(engine, limited.url, rate=1)
        add(engine, free.url)
        succeed(engine, 6)
        with notifier(engine, clock, "worker-a") as worker:
            assert worker.run().delivered == 7  # all six to the free one, one to the limited
        assert free.wait_applied(6, timeout=5) and limited.wait_applied(1, timeout=5)


def test_a_bucket_stamped_ahead_by_another_clock_refills_nothing(engine: Engine) -> None:
    now = datetime.now(UTC)
    endpoint_id = add(engine, "https://app.example.com/in", rate=4)
    with engine.begin() as conn:
        row = conn.execute(sa.select(_endpoints).where(_endpoints.c.id == endpoint_id)).one()
        assert take_allowance(conn, row, now=now, wanted=10) == 4
        # Another worker, its clock 5 s ahead, spent what refilled by then.
        conn.execute(
            _endpoints.update()
            .where(_endpoints.c.id == endpoint_id)
            .values(rate_tokens=0.0, rate_at=now + timedelta(seconds=5))
        )
        assert take_allowance(conn, row, now=now + timedelta(seconds=1), wanted=10) == 0
        stored = conn.execute(sa.select(_endpoints.c.rate_tokens)).scalar_one()
        assert stored == 0.0


def test_what_a_claim_could_not_use_stays_in_the_bucket(engine: Engine) -> None:
    clock = Clock()
    with NotifyApp([NOTIFY_SECRET]) as app:
        add(engine, app.url, rate=4)
        succeed(engine, 1)
        with notifier(engine, clock, "worker-a") as worker:
            assert worker.run().delivered == 1  # four allowed, one due: three are left
            for submission_id in add_submissions(engine, 3, prefix="later"):
                change(engine, outbox_to(), submission_id, "succeeded")
            assert worker.run().delivered == 3  # at the same moment
        assert app.wait_applied(4, timeout=5)
