"""The references' database: one raw driver connection per gunicorn worker thread, no pool.

A ``sync`` worker has one thread, so one connection; a ``gthread`` worker's threads each
get their own, as the service's pool gives each thread its own (a shared ``sqlite3``
connection refuses other threads, and a shared psycopg one would mix their transactions).
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

__all__ = ["worker_connection"]

#: This thread's connections, by URL (a worker thread has one; a test may use several).
_local = threading.local()


def worker_connection(url: str, *, autocommit: bool = False) -> Any:
    """Return this worker thread's one connection to ``url``, opened after the fork.

    SQLite's is in autocommit (the caller writes ``BEGIN``), in WAL like the service's;
    PostgreSQL's opens a transaction itself unless ``autocommit``.
    """
    connections: dict[str, Any] = _local.__dict__.setdefault("connections", {})
    connection = connections.get(url)
    if connection is None:
        if url.startswith("sqlite"):
            connection = sqlite3.connect(url.split("///", 1)[1], timeout=5, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
        else:
            import psycopg

            dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
            connection = psycopg.connect(dsn, autocommit=autocommit)
        connections[url] = connection
    return connection
