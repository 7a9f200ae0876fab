"""What the benchmarks share: databases to run on, the service's environment, free ports."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from config.settings import Settings
from devtools.databases import create_scratch_database, drop_scratch_database
from devtools.processes import ROOT, WebProcess, base_env, free_port, procfile_command
from receiver.store.engines import create_db_engine
from receiver.store.migrate import upgrade

__all__ = [
    "BENCH_DATABASE_PREFIX",
    "RESULTS",
    "ROOT",
    "SECRET_KEY",
    "WEBHOOK_KEY",
    "WEBHOOK_SECRET",
    "Database",
    "databases",
    "each_database",
    "each_size",
    "load_figures",
    "outside_transaction",
    "service_env",
    "twin",
    "web_server",
]

RESULTS = ROOT / "bench" / "results"
#: PostgreSQL runs use a database of their own beside TEST_DATABASE_URL's, named so and
#: dropped afterwards: the database the URL names is never changed.
BENCH_DATABASE_PREFIX = "jobhooks_bench_"
SECRET_KEY = "bench-secret-key-0123456789abcdef"
WEBHOOK_KEY = b"jobhooks-bench-webhook-key-32byt"
WEBHOOK_SECRET = "whsec_" + __import__("base64").b64encode(WEBHOOK_KEY).decode()
API_KEY = "bench-api-key"


@dataclass(frozen=True, slots=True)
class Database:
    """One database to benchmark on: ``sqlite`` or ``postgresql``, and its URL."""

    name: str
    url: str

    def settings(self) -> Settings:
        return Settings.from_env(service_env(self))

    def engine(self) -> Engine:
        return create_db_engine(self.settings())

    def reset(self) -> None:
        """Empty the benchmark's database (a new SQLite file, or its own PostgreSQL
        database's schema), migrate, and on PostgreSQL checkpoint."""
        if self.name == "sqlite":
            path = Path(sa.make_url(self.url).database or "")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        else:
            own = sa.make_url(self.url).database or ""
            assert own.startswith(BENCH_DATABASE_PREFIX), own  # never a database it did not make
            plain = sa.create_engine(self.url)
            with plain.begin() as conn:
                conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
                conn.execute(sa.text("CREATE SCHEMA public"))
            plain.dispose()
        engine = self.engine()
        try:
            upgrade(engine)
            if self.name == "postgresql":
                # The stage before may have loaded or deleted millions of rows in seconds,
                # as no live server does: its WAL is checkpointed now, not during this one.
                outside_transaction(engine, "CHECKPOINT")
        finally:
            engine.dispose()


def outside_transaction(engine: Engine, *statements: str) -> None:
    """Run PostgreSQL's maintenance ``statements`` (VACUUM, CHECKPOINT), which no transaction
    may hold, one after the other on one connection in autocommit."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


def steal_seconds(stat: Path = Path("/proc/stat")) -> float:
    """Return the CPU time the hypervisor has given other guests so far, in all (Linux).

    A row whose steal grows while it runs was measured on a machine partly taken away: its
    figures say less about the code (``/proc/stat``'s eighth CPU field; 0 off Linux).
    """
    try:
        with stat.open() as lines:
            fields = lines.readline().split()
    except OSError:
        return 0.0
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def _postgres_server() -> str | None:
    """Return TEST_DATABASE_URL (SQLAlchemy form) when it names a PostgreSQL server."""
    raw = os.environ.get("TEST_DATABASE_URL") or ""
    if not raw.startswith(("postgres://", "postgresql://", "postgresql+psycopg://")):
        return None
    settings = Settings.from_env({"APP_ENV": "test", "SECRET_KEY": "x", "DATABASE_URL": raw})
    return settings.database_url


@contextmanager
def databases(only: str | None = None) -> Iterator[list[Database]]:
    """Yield SQLite (a file in a temporary folder), and PostgreSQL when TEST_DATABASE_URL
    names a server: a database of the benchmark's own there, dropped afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="jobhooks-bench-"))
    found = []
    if only in (None, "sqlite"):
        found.append(Database("sqlite", f"sqlite:///{folder / 'bench.db'}"))
    server = _postgres_server() if only in (None, "postgresql") else None
    own = None if server is None else create_scratch_database(server, BENCH_DATABASE_PREFIX)
    if own is not None:
        found.append(Database("postgresql", own))
    try:
        yield found
    finally:
        if own is not None:
            drop_scratch_database(own, BENCH_DATABASE_PREFIX)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def twin(database: Database) -> Iterator[Database]:
    """Yield a second database of the same kind, to migrate and fill apart: a SQLite file
    beside the first (whose folder goes with it), or another PostgreSQL database of the
    benchmark's own, dropped afterwards."""
    if database.name == "sqlite":
        path = Path(sa.make_url(database.url).database or "")
        yield Database("sqlite", f"sqlite:///{path.with_name('twin-' + path.name)}")
        return
    own = create_scratch_database(database.url, BENCH_DATABASE_PREFIX)
    try:
        yield Database("postgresql", own)
    finally:
        drop_scratch_database(own, BENCH_DATABASE_PREFIX)


def service_env(database: Database, **extra: str) -> dict[str, str]:
    """Return the environment the service runs with: production, as deployed."""
    return base_env(
        {
            "APP_ENV": "production",
            "DATABASE_URL": database.url,
            "SECRET_KEY": SECRET_KEY,
            "PUBLIC_URL": "https://hooks.bench.invalid",
            "ITTYBIT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "ITTYBIT_API_KEY": API_KEY,
            "WEB_CONCURRENCY": "2",
            **extra,
        }
    )


def load_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """Return what every load run records of a load generator's summary: its length,
    requests, rate, median and p99 latency, and errors."""
    seconds = summary["duration_us"] / 1e6
    requests = summary["requests"]
    return {
        "seconds": round(seconds, 2),
        "requests": requests,
        "rps": round(requests / seconds, 1),
        "p50_ms": round(summary["latency_us"]["p50"] / 1000, 2),
        "p99_ms": round(summary["latency_us"]["p99"] / 1000, 2),
        "errors": sum(summary["errors"].values()),
    }


def web_server(
    database: Database,
    log_path: Path,
    *,
    app: str | None = None,
    extra: str = "",
    env: Mapping[str, str] | None = None,
) -> WebProcess:
    """Return the Procfile's web process on a free port, serving ``app`` (``module:app``,
    a benchmark's own app under the same gunicorn and settings) or the real one, with
    ``env`` added to the service's environment."""
    command = procfile_command("web")
    if app is not None:
        command = command.replace("wsgi:app", app).replace(
            "config/gunicorn.py", "python:bench.gunicorn_bare"
        )
    if extra:
        command = f"{command} {extra}"
    environment = service_env(database, PORT=str(free_port()), **dict(env or {}))
    return WebProcess(environment, log_path=log_path, command=command)


_Run = TypeVar("_Run")


def each_size(
    label: str,
    databases: list[Database],
    sizes: list[int],
    run: Callable[[Database, int], _Run],
    progress: Callable[[str], Any] = print,
) -> list[_Run]:
    """Run ``run(database, n)`` for every database and size, saying how long each took."""
    runs = []
    for database in databases:
        for jobs in sizes:
            progress(f"{label}: {database.name}, N={jobs}")
            started = time.monotonic()
            runs.append(run(database, jobs))
            progress(f"{label}: done in {time.monotonic() - started:.0f}s")
    return runs


def each_database(
    label: str,
    databases: list[Database],
    run: Callable[[Database], _Run],
    progress: Callable[[str], Any] = print,
) -> list[_Run]:
    """Run ``run(database)`` for every database, saying how long each took."""
    runs = []
    for database in databases:
        progress(f"{label}: {database.name}")
        started = time.monotonic()
        runs.append(run(database))
        progress(f"{label}: done in {time.monotonic() - started:.0f}s")
    return runs
