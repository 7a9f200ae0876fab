"""Scratch PostgreSQL databases for the tests and the benchmarks: made, used, dropped.

The database a URL names is only connected to, never changed: it may hold real data. Each
caller makes a database of its own beside it, named with its prefix, and drops only
databases that carry that prefix. Needs a role allowed to create databases (``CREATEDB``).
"""

from __future__ import annotations

import os
import secrets

import sqlalchemy as sa

__all__ = ["create_scratch_database", "drop_scratch_database"]


def create_scratch_database(server_url: str, prefix: str) -> str:
    """Create an empty database named ``prefix…`` on ``server_url``'s server; return its URL."""
    name = f"{prefix}{os.getpid()}_{secrets.token_hex(4)}"
    server = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        server.dispose()
    return sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_scratch_database(url: str, prefix: str) -> None:
    """Drop a database made by :func:`create_scratch_database`; refuse any other name."""
    parsed = sa.make_url(url)
    name = parsed.database or ""
    if not name.startswith(prefix):
        message = f"refusing to drop {name!r}: only databases named {prefix}… are dropped here"
        raise ValueError(message)
    server = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        server.dispose()
