"""The tests' own PostgreSQL database: made on TEST_DATABASE_URL's server, never its database."""

from __future__ import annotations

import secrets

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from config.settings import Settings
from receiver.store.engines import create_db_engine
from receiver.store.migrate import upgrade
from tests.conftest import create_test_database, drop_test_database, empty_tables, postgres_url

pytestmark = pytest.mark.postgres


@pytest.fixture
def configured_url() -> str:
    url = postgres_url()
    if url is None:
        pytest.skip("PostgreSQL tests need TEST_DATABASE_URL")
    return url


def test_the_session_database_is_not_the_configured_one(
    configured_url: str, postgres_engine: Engine
) -> None:
    own = postgres_engine.url.database
    assert own != sa.make_url(configured_url).database
    assert own is not None and own.startswith("jobhooks_test_")


def test_a_test_run_leaves_the_configured_database_alone(configured_url: str) -> None:
    """Whatever the configured database holds survives creating, migrating, emptying and
    dropping a test database."""
    sentinel = f"keep_me_{secrets.token_hex(4)}"
    configured = sa.create_engine(configured_url)
    with configured.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {sentinel} (value text)"))
        conn.execute(sa.text(f"INSERT INTO {sentinel} VALUES ('real data')"))
    try:
        own = create_test_database(configured_url)
        engine = create_db_engine(_settings_for(own))
        try:
            upgrade(engine)
            empty_tables(engine)
        finally:
            engine.dispose()
            drop_test_database(own)
        with configured.connect() as conn:
            kept = conn.execute(sa.text(f"SELECT value FROM {sentinel}")).scalar_one()
        assert kept == "real data"
    finally:
        with configured.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {sentinel}"))
        configured.dispose()


def test_dropping_refuses_a_database_the_tests_did_not_make(configured_url: str) -> None:
    with pytest.raises(ValueError, match="only databases named jobhooks_test_"):
        drop_test_database(configured_url)


def _settings_for(url: str) -> Settings:
    return Settings.from_env({"APP_ENV": "test", "SECRET_KEY": "x", "DATABASE_URL": url})


def test_the_benchmark_works_in_a_database_of_its_own(
    configured_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``make bench`` makes, migrates, resets and drops its own database; the configured
    database keeps what it holds, and DATABASE_URL is never read."""
    from bench.common import BENCH_DATABASE_PREFIX, databases

    sentinel = f"keep_me_{secrets.token_hex(4)}"
    configured = sa.create_engine(configured_url)
    with configured.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {sentinel} (value text)"))
        conn.execute(sa.text(f"INSERT INTO {sentinel} VALUES ('real data')"))
    monkeypatch.setenv("TEST_DATABASE_URL", configured_url)
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/not_read")
    try:
        with databases("postgresql") as found:
            (database,) = found
            own = sa.make_url(database.url).database or ""
            assert own.startswith(BENCH_DATABASE_PREFIX)
            database.reset()
            database.reset()  # again: a second suite starts from empty tables too
        with configured.connect() as conn:
            names = conn.execute(sa.text("SELECT datname FROM pg_database")).scalars().all()
            kept = conn.execute(sa.text(f"SELECT value FROM {sentinel}")).scalar_one()
        assert own not in names
        assert kept == "real data"
    finally:
        with configured.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {sentinel}"))
        configured.dispose()
