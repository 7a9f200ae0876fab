"""Liveness and readiness probes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from receiver import create_app
from receiver.store.engines import get_engine
from receiver.store.migrate import head_revision

EMPTY_SCHEMA = "readyz_unmigrated"


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_when_migrated(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "revision": head_revision()}


@pytest.fixture
def unmigrated_app(
    app_config: dict[str, Any], database_url: str, tmp_path: Path
) -> Iterator[Flask]:
    """The app on an empty database: a new SQLite file, or an empty PostgreSQL schema."""
    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        admin = sa.create_engine(database_url)
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {EMPTY_SCHEMA} CASCADE"))
            conn.execute(sa.text(f"CREATE SCHEMA {EMPTY_SCHEMA}"))
        admin.dispose()
        url = (
            sa.make_url(database_url)
            .update_query_dict({"options": f"-csearch_path={EMPTY_SCHEMA}"})
            .render_as_string(hide_password=False)
        )
    app = create_app({**app_config, "DATABASE_URL": url})
    yield app
    get_engine(app).dispose()
    if not database_url.startswith("sqlite"):
        admin = sa.create_engine(database_url)
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {EMPTY_SCHEMA} CASCADE"))
        admin.dispose()


def test_readyz_on_an_unmigrated_database(unmigrated_app: Flask) -> None:
    response = unmigrated_app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {
        "error": "not_migrated",
        "message": f"database is at no revision, code needs {head_revision()}",
    }
    assert unmigrated_app.test_client().get("/healthz").status_code == 200


def test_readyz_when_the_database_is_unreachable(app_config: dict[str, Any]) -> None:
    app = create_app({**app_config, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    try:
        response = app.test_client().get("/readyz")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert response.get_json() == {
            "error": "database_unavailable",
            "message": "database is unreachable",
        }
    finally:
        get_engine(app).dispose()
