"""Fan-out: notifications to three endpoints, one of which accepts and never answers.

The Procfile's ``web`` and ``worker`` run as in the notification benchmark
(``bench/notify.py``), with three endpoint records and no NOTIFY_URL: two stand-in
applications (``devtools.notify_app``) and one that accepts every connection and never
answers, so each of its attempts holds a slot until the notifier's request timeout (15 s).
Final webhooks go one at a time, then in a burst; the figure is, for the two healthy
endpoints, the latency from each webhook's 200 to the application receiving its notification.
"""

from __future__ import annotations

import socket
import statistics
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Database
from bench.notify import (
    arrival_latencies,
    percentile,
    send_burst,
    send_one_by_one,
    services,
)
from bench.webhook import seed_submissions
from devtools.notify_app import NotifyApp
from receiver.flows.endpoints import SUBMISSION_TYPES, add_endpoint, new_secret
from receiver.store.models import utcnow

__all__ = ["FanoutRun", "Hanging", "run_fanout"]


@dataclass(frozen=True, slots=True)
class FanoutRun:
    """One database's fan-out figures, for the two healthy endpoints."""

    database: str
    webhooks: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    burst: int
    burst_p95_ms: float
    burst_max_ms: float
    #: Connections the hanging endpoint accepted (each an attempt left to time out).
    hung: int
    delivered: int
    expected: int

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class Hanging:
    """An endpoint that accepts every connection, reads nothing and never answers."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="hanging", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/never"

    @property
    def accepted(self) -> int:
        return len(self._held)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            self._held.append(connection)

    def __enter__(self) -> Hanging:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for connection in self._held:
            connection.close()


def _ms(values: list[float], fraction: float) -> float:
    return round(percentile(values, fraction) * 1000, 1)


def run_fanout(
    database: Database, *, webhooks: int, burst: int, workdir: Path, progress: Any = print
) -> FanoutRun:
    """Measure one database: one at a time, then a burst, to two healthy endpoints and one
    that hangs."""
    database.reset()
    rows = seed_submissions(database, "fo", webhooks + burst)
    secrets = [new_secret(), new_secret()]
    with NotifyApp([secrets[0]]) as first, NotifyApp([secrets[1]]) as second, Hanging() as hung:
        engine = database.engine()
        try:
            with engine.begin() as conn:
                for url, secret in [(first.url, secrets[0]), (second.url, secrets[1])]:
                    add_endpoint(
                        conn, url, now=utcnow(), event_types=SUBMISSION_TYPES[:4], secret=secret
                    )
                add_endpoint(conn, hung.url, now=utcnow(), event_types=SUBMISSION_TYPES[:4])
        finally:
            engine.dispose()
        healthy = [first, second]
        with services(database, workdir, "fanout") as (web, _, settings):
            answered = send_one_by_one(web.url, settings, rows[:webhooks], "fo", healthy)
            one_by_one = [t for app in healthy for t in arrival_latencies(app, answered)]
            progress(
                f"fanout: {database.name}: p95 {_ms(one_by_one, 0.95):g} ms one by one, "
                f"{hung.accepted} connections left hanging"
            )
            burst_answered, _ = send_burst(web.url, settings, rows[webhooks:], "fo")
            for app in healthy:
                if not app.wait_applied(webhooks + burst, timeout=120):
                    message = f"the burst's notifications did not all arrive ({len(app.applied)})"
                    raise RuntimeError(message)
            in_burst = [t for app in healthy for t in arrival_latencies(app, burst_answered)]
    verified = all(item.verified for app in healthy for item in app.received)
    return FanoutRun(
        database=database.name,
        webhooks=webhooks,
        p50_ms=round(statistics.median(one_by_one) * 1000, 1),
        p95_ms=_ms(one_by_one, 0.95),
        max_ms=_ms(one_by_one, 1.0),
        burst=burst,
        burst_p95_ms=_ms(in_burst, 0.95),
        burst_max_ms=_ms(in_burst, 1.0),
        hung=hung.accepted,
        delivered=sum(len(app.applied) for app in healthy) if verified else 0,
        expected=2 * (webhooks + burst),
    )
