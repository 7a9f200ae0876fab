"""Migrations that change what is already stored: each goes forward and back, on each database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine

from config.settings import Settings
from receiver.store.engines import create_db_engine
from receiver.store.migrate import alembic_config, upgrade
from tests.conftest import NO_POSTGRES, create_test_database, drop_test_database, postgres_url
from tests.helpers import SECRET_KEY


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def unmigrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty database of the test's own (never the session's: this one goes back)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'migrations.db'}"
        own = None
    else:
        server = postgres_url()
        if server is None:
            pytest.skip(NO_POSTGRES)
        url = own = create_test_database(server)
    settings = Settings.from_env({"APP_ENV": "test", "SECRET_KEY": SECRET_KEY, "DATABASE_URL": url})
    engine = create_db_engine(settings)
    try:
        yield engine
    finally:
        engine.dispose()
        if own is not None:
            drop_test_database(own)


def _downgrade(engine: Engine, revision: str) -> None:
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def _inbox_indexes(engine: Engine) -> set[str]:
    return {index["name"] or "" for index in sa.inspect(engine).get_indexes("webhook_events")}


def test_0013_drops_the_outcome_index_and_gives_it_back(unmigrated: Engine) -> None:
    upgrade(unmigrated, "0012")
    assert "ix_webhook_events_outcome" in _inbox_indexes(unmigrated)

    upgrade(unmigrated)
    after = _inbox_indexes(unmigrated)
    assert "ix_webhook_events_outcome" not in after
    assert "ix_webhook_events_outcome_received_at" in after  # what serves its reads now

    _downgrade(unmigrated, "0012")
    assert "ix_webhook_events_outcome" in _inbox_indexes(unmigrated)
