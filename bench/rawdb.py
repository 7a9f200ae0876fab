"""The references' database: one raw driver connection per gunicorn worker, no pool."""

from __future__ import annotations

import sqlite3
from typing import Any

__all__ = ["worker_connection"]

#: This process's connections, by URL (a worker has one; a test may use several).
_connections: dict[str, Any] = {}


def worker_connection(url: str, *, autocommit: bool = False) -> Any:
    """Return this worker's one connection to ``url``, opened after the fork.

    SQLite's is in autocommit (the caller writes ``BEGIN``), in WAL like the service's;
    PostgreSQL's opens a transaction itself unless ``autocommit``.
    """
    connection = _connections.get(url)
    if connection is None:
        if url.startswith("sqlite"):
            connection = sqlite3.connect(url.split("///", 1)[1], timeout=5, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
        else:
            import psycopg

            dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
            connection = psycopg.connect(dsn, autocommit=autocommit)
        _connections[url] = connection
    return connection
