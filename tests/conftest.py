"""Fixtures: a fresh, migrated database per test on SQLite, and on PostgreSQL when
TEST_DATABASE_URL is set; the app, its test client and CLI runner."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from pytest_httpserver import HTTPServer
from sqlalchemy.engine import Engine

from config.settings import Settings
from receiver import create_app
from receiver.db import create_db_engine, get_engine
from receiver.migrate import upgrade
from reconcile.client import set_testing
from tests.helpers import OLD_SECRET_KEY, SECRET_KEY, WEBHOOK_SECRET

_TABLES = ("webhook_events", "submissions")


def postgres_url() -> str | None:
    """Return TEST_DATABASE_URL in SQLAlchemy form, or None when PostgreSQL tests are off."""
    raw = os.environ.get("TEST_DATABASE_URL")
    if not raw:
        return None
    return Settings.from_env(
        {"APP_ENV": "test", "SECRET_KEY": "x", "DATABASE_URL": raw}
    ).database_url


def _settings(database_url: str) -> Settings:
    return Settings.from_env(
        {"APP_ENV": "test", "SECRET_KEY": SECRET_KEY, "DATABASE_URL": database_url}
    )


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating once is much faster)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = create_db_engine(_settings(f"sqlite:///{path}"))
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_engine() -> Iterator[Engine]:
    """A migrated PostgreSQL database, emptied before every test that uses it."""
    url = postgres_url()
    if url is None:
        pytest.skip("PostgreSQL tests need TEST_DATABASE_URL")
    engine = create_db_engine(_settings(url))
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """The URL of an empty, migrated database: SQLite, and PostgreSQL when configured."""
    if request.param == "sqlite":
        path = tmp_path / "jobhooks.db"
        shutil.copyfile(sqlite_template, path)
        return f"sqlite:///{path}"
    engine: Engine = request.getfixturevalue("postgres_engine")
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {', '.join(_TABLES)} RESTART IDENTITY"))
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def app_config(database_url: str) -> dict[str, Any]:
    """The configuration the test app is built from; tests may change it before ``app``."""
    return {
        "APP_ENV": "test",
        "DATABASE_URL": database_url,
        "SECRET_KEY": f"{SECRET_KEY},{OLD_SECRET_KEY}",
        "PUBLIC_URL": "https://hooks.example.com",
        "ITTYBIT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ITTYBIT_API_URL": "http://127.0.0.1:9",
        "ITTYBIT_API_KEY": "test-api-key",
    }


@pytest.fixture
def app(app_config: dict[str, Any]) -> Iterator[Flask]:
    app = create_app(app_config)
    yield app
    get_engine(app).dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture
def engine(app: Flask) -> Engine:
    return get_engine(app)


@pytest.fixture(scope="session")
def _threaded_httpserver() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def api_server(_threaded_httpserver: HTTPServer) -> HTTPServer:
    """A local HTTP server standing in for the ittybit API; answers requests concurrently."""
    _threaded_httpserver.clear()
    return _threaded_httpserver


@pytest.fixture
def no_retry_waits() -> Iterator[None]:
    """Let the ittybit client retry without sleeping between tries."""
    set_testing(True)
    yield
    set_testing(False)


@pytest.fixture
def ittybit_api(
    app_config: dict[str, Any], api_server: HTTPServer, no_retry_waits: None
) -> HTTPServer:
    """Point the app at the local ``api_server``; use before ``app`` is built."""
    app_config["ITTYBIT_API_URL"] = api_server.url_for("").rstrip("/")
    return api_server
