"""Fixtures: a fresh, migrated database per test on SQLite, and on PostgreSQL when
TEST_DATABASE_URL is set; the app, its test client and CLI runner.

TEST_DATABASE_URL names a server and a database to connect to: the tests create a database
of their own there (``jobhooks_test_…``) and drop only that one.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from pytest_httpserver import HTTPServer
from sqlalchemy.engine import Engine
from werkzeug.routing import Rule
from werkzeug.security import check_password_hash, generate_password_hash

from config.settings import Settings
from devtools.databases import create_scratch_database, drop_scratch_database
from devtools.processes import ROOT, WebProcess, base_env, free_port, procfile_command
from receiver import create_app
from receiver.cli import cli as jobhooks_cli
from receiver.flows import admin_accounts
from receiver.ittybit.client import set_testing
from receiver.store.engines import create_db_engine, get_engine
from receiver.store.migrate import upgrade
from receiver.web.api.client import close_api_client
from tests.helpers import OLD_SECRET_KEY, SECRET_KEY, WEBHOOK_SECRET
from tests.reconcile_helpers import FakeIttybit


def postgres_url() -> str | None:
    """Return TEST_DATABASE_URL in SQLAlchemy form, or None when PostgreSQL tests are off."""
    raw = os.environ.get("TEST_DATABASE_URL")
    if not raw:
        return None
    return Settings.from_env(
        {"APP_ENV": "test", "SECRET_KEY": "x", "DATABASE_URL": raw}
    ).database_url


#: Why a test marked ``postgres`` is skipped when TEST_DATABASE_URL is unset.
NO_POSTGRES = "PostgreSQL tests need TEST_DATABASE_URL"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Without TEST_DATABASE_URL, skip every test marked ``postgres`` before its fixtures.

    They would skip anyway, but only after a temporary directory, a database file and often
    an app were made for nothing: about a third of the unit tests are PostgreSQL variants.
    """
    if postgres_url() is not None:
        return
    skip = pytest.mark.skip(reason=NO_POSTGRES)
    for item in items:
        if item.get_closest_marker("postgres") is not None:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Iterator[None]:
    """Keep the garbage collector off what collecting makes: modules, tables, test items.

    They live as long as the run, yet every full collection walked their hundreds of
    thousands of objects again, during the collection and after it: that was over a tenth
    of a unit-test run. They are frozen out of the collector's reach once collected;
    what the tests make is collected as before.
    """
    gc.disable()
    try:
        return (yield)
    finally:
        gc.freeze()
        gc.enable()


def _settings(database_url: str) -> Settings:
    return Settings.from_env(
        {"APP_ENV": "test", "SECRET_KEY": SECRET_KEY, "DATABASE_URL": database_url}
    )


@pytest.fixture(scope="session", autouse=True)
def _scrypt_once_per_password() -> Iterator[None]:
    """Make each admin password's scrypt hash once, and check each hash and password once.

    A hash costs about 0.15 s by design, and the admin tests sign in with one password
    again and again. The hashes and verdicts are werkzeug's own, with the production
    method and cost; only the salt repeats between tests (per worker).
    """
    made: dict[tuple[str, str], str] = {}
    checked: dict[tuple[str, str], bool] = {}

    def generate(password: str, method: str) -> str:
        key = (password, method)
        if key not in made:
            made[key] = generate_password_hash(password, method=method)
        return made[key]

    def check(password_hash: str, password: str) -> bool:
        key = (password_hash, password)
        if key not in checked:
            checked[key] = check_password_hash(password_hash, password)
        return checked[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(admin_accounts, "generate_password_hash", generate)
        patch.setattr(admin_accounts, "check_password_hash", check)
        yield


#: werkzeug's own builder compiler, which the fixture below shares the results of.
WERKZEUG_COMPILE_BUILDER = Rule._compile_builder


@pytest.fixture(scope="session", autouse=True)
def _url_builders_compiled_once() -> Iterator[None]:
    """Compile each URL rule's builder code once per test process, not once per app.

    Binding a rule to an app's URL map makes werkzeug write two builder functions for it
    as Python source and compile them: four fifths of ``create_app``'s cost (about 10 ms
    of 12), paid by some 600 apps a run. Without defaults (none of the app's rules has
    any) the code depends only on the rule, so each app gets werkzeug's own functions
    compiled for an earlier app built from the same rules; every rule still binds them
    to itself. ``tests/unit/web/test_smoke.py`` checks the URLs built either way agree.
    """
    original = WERKZEUG_COMPILE_BUILDER
    compiled: dict[tuple[Any, ...], Callable[..., tuple[str, str]]] = {}

    def compile_builder(rule: Rule, append_unknown: bool = True) -> Callable[..., tuple[str, str]]:
        if rule.defaults:
            return original(rule, append_unknown)
        key = (rule.rule, tuple(rule._trace), append_unknown)
        builder = compiled.get(key)
        if builder is None:
            builder = compiled[key] = original(rule, append_unknown)
        return builder

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Rule, "_compile_builder", compile_builder)
        yield


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating once is much faster)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = create_db_engine(_settings(f"sqlite:///{path}"))
    upgrade(engine)
    engine.dispose()
    return path


#: The tests' own databases are named so; nothing else is ever dropped.
TEST_DATABASE_PREFIX = "jobhooks_test_"


def create_test_database(server_url: str) -> str:
    """Create an empty database of the tests' own beside the one ``server_url`` names."""
    return create_scratch_database(server_url, TEST_DATABASE_PREFIX)


def drop_test_database(url: str) -> None:
    """Drop a database made by :func:`create_test_database`, and refuse any other."""
    drop_scratch_database(url, TEST_DATABASE_PREFIX)


_TABLES: dict[str, list[str]] = {}


def empty_tables(engine: Engine) -> None:
    """Empty every table of a test database but alembic's, restarting their ids."""
    key = engine.url.render_as_string()
    tables = _TABLES.get(key)
    if tables is None:
        names = sa.inspect(engine).get_table_names()
        tables = _TABLES[key] = [name for name in names if name != "alembic_version"]
    statement = sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    try:
        with engine.begin() as conn:
            conn.execute(statement)
    except sa.exc.DBAPIError as exc:
        # A test that cut every connection (a restart) left this pool's one dead: it is
        # discarded now; the pool pings only connections idle for a while.
        if not exc.connection_invalidated:
            raise
        with engine.begin() as conn:
            conn.execute(statement)


@pytest.fixture(scope="session")
def postgres_engine() -> Iterator[Engine]:
    """A migrated PostgreSQL database of the session's own, emptied before every test."""
    url = postgres_url()
    if url is None:
        pytest.skip(NO_POSTGRES)
    own = create_test_database(url)
    engine = create_db_engine(_settings(own))
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        drop_test_database(own)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """The URL of an empty, migrated database: SQLite, and PostgreSQL when configured."""
    if request.param == "sqlite":
        path = tmp_path / "jobhooks.db"
        shutil.copyfile(sqlite_template, path)
        return f"sqlite:///{path}"
    engine: Engine = request.getfixturevalue("postgres_engine")
    empty_tables(engine)
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
    close_api_client(app)
    get_engine(app).dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class JobhooksRunner(FlaskCliRunner):
    """Invoke commands through the ``jobhooks`` console script's group, as users do.

    The commands are the group's (``app.cli`` has none); the runner's ScriptInfo hands the
    test's app to them instead of one built from the environment.
    """

    def invoke(self, cli: Any = None, args: Any = None, **kwargs: Any) -> Any:
        return super().invoke(cli or jobhooks_cli, args, **kwargs)


# Every runner a test makes (app.test_cli_runner()) goes through the jobhooks group.
Flask.test_cli_runner_class = JobhooksRunner


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture
def engine(app: Flask) -> Engine:
    return get_engine(app)


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Callable[..., WebProcess]]:
    """Return ``start(env)``: the Procfile's release, then its web process (real gunicorn).

    Each runs on a free port (``PUBLIC_URL`` pointing at it unless ``env`` says otherwise)
    with a clean environment (``base_env``) plus ``env``, and is stopped (SIGTERM, as
    Heroku does) when the test ends. ``release=False`` skips migrating.
    """
    started: list[WebProcess] = []

    def start(env: Mapping[str, str], *, release: bool = True) -> WebProcess:
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        full = base_env({"HOME": str(tmp_path), "PORT": str(port), "PUBLIC_URL": public, **env})
        if release:
            done = subprocess.run(
                ["/bin/sh", "-c", procfile_command("release")],
                cwd=ROOT,
                env=full,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stderr
        web = WebProcess(full, log_path=tmp_path / f"gunicorn-{port}.log")
        started.append(web)
        web.start(timeout=60)
        return web

    yield start
    for web in started:
        web.stop()


class _QuickToStopServer(HTTPServer):
    """pytest-httpserver's server, whose stop() waits 20 ms at most, not half a second."""

    def thread_target(self) -> None:
        assert self.server is not None
        self.server.serve_forever(poll_interval=0.02)


@pytest.fixture(scope="session")
def _threaded_httpserver() -> Iterator[HTTPServer]:
    server = _QuickToStopServer(host="127.0.0.1", port=0, threaded=True)
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
def fake(api_server: HTTPServer) -> Iterator[FakeIttybit]:
    """A scripted ittybit API on ``api_server`` (see ``tests/reconcile_helpers.py``)."""
    fake = FakeIttybit(api_server)
    yield fake
    fake.release()


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
