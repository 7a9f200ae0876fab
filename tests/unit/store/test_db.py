"""Which database failures count as 'unavailable' (answered 503, retried by ittybit)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from receiver.store.engines import database_unavailable


def caught(action: Callable[[], Any]) -> SQLAlchemyError:
    with pytest.raises(SQLAlchemyError) as info:
        action()
    return info.value


def test_exhausted_pool_is_unavailable(database_url: str) -> None:
    engine = sa.create_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=0.05)
    try:
        with engine.connect():
            error = caught(engine.connect)
        assert isinstance(error, sa.exc.TimeoutError)
        assert database_unavailable(error)
    finally:
        engine.dispose()


def test_unreachable_server_is_unavailable() -> None:
    engine = sa.create_engine(
        "postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2}
    )
    try:
        assert database_unavailable(caught(engine.connect))
    finally:
        engine.dispose()


def test_constraint_violation_is_not_unavailable(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            # created_at is NOT NULL.
            insert = sa.text(
                "INSERT INTO submissions (submission_id, user_id, input_url, status, meta,"
                " created_at, updated_at) VALUES ('s', 'u', 'i', 'pending', '{}', NULL, NULL)"
            )
            error = caught(lambda: conn.execute(insert))
        assert isinstance(error, IntegrityError)
        assert not database_unavailable(error)
    finally:
        engine.dispose()


def test_the_migrations_build_exactly_the_models_tables(engine: Engine) -> None:
    """A model changed without a migration (or the reverse) shows up here, on each database."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, SQLModel.metadata)
    assert differences == []


def test_postgresql_reads_run_in_autocommit_and_writes_stay_transactions(
    postgres_engine: Engine,
) -> None:
    """A read through the read-only engine opens no transaction; the same pooled
    connection, handed out next for a write, is a transaction again: one that fails
    leaves nothing behind."""
    from psycopg.pq import TransactionStatus

    from receiver.store.engines import read_only

    postgres_engine.dispose()  # one connection in the pool from here: the read's, reused
    with read_only(postgres_engine).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM api_keys")).scalar() == 0
        reader = conn.connection.dbapi_connection
        assert reader is not None
        assert reader.info.transaction_status == TransactionStatus.IDLE  # no BEGIN was sent
    insert = sa.text("INSERT INTO api_keys (name, key_hash, created_at) VALUES ('k', 'h', now())")
    with pytest.raises(RuntimeError), postgres_engine.begin() as conn:
        writer = conn.connection.dbapi_connection
        conn.execute(insert)
        assert writer is reader
        assert writer.info.transaction_status == TransactionStatus.INTRANS
        raise RuntimeError
    with read_only(postgres_engine).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM api_keys")).scalar() == 0
