"""What the benchmarks share: databases to run on, the service's environment, free ports."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from config.settings import Settings
from devtools.processes import ROOT, base_env
from receiver.db import create_db_engine
from receiver.migrate import upgrade

__all__ = [
    "BENCH_SCHEMA",
    "RESULTS",
    "ROOT",
    "SECRET_KEY",
    "WEBHOOK_KEY",
    "WEBHOOK_SECRET",
    "Database",
    "databases",
    "service_env",
]

RESULTS = ROOT / "bench" / "results"
#: PostgreSQL runs use a schema of their own, dropped and made anew: nothing else is touched.
BENCH_SCHEMA = "jobhooks_bench"
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
        """Empty the benchmark's database (a new SQLite file, or the bench schema) and migrate."""
        if self.name == "sqlite":
            path = Path(sa.make_url(self.url).database or "")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        else:
            plain = sa.create_engine(_without_options(self.url))
            with plain.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {BENCH_SCHEMA} CASCADE"))
                conn.execute(sa.text(f"CREATE SCHEMA {BENCH_SCHEMA}"))
            plain.dispose()
        engine = self.engine()
        try:
            upgrade(engine)
        finally:
            engine.dispose()

    def drop(self) -> None:
        """Remove what :meth:`reset` made (the SQLite file goes with its folder)."""
        if self.name == "postgresql":
            plain = sa.create_engine(_without_options(self.url))
            with plain.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {BENCH_SCHEMA} CASCADE"))
            plain.dispose()


def _without_options(url: str) -> sa.URL:
    return sa.make_url(url).difference_update_query(["options"])


def _postgres_url() -> str | None:
    raw = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL") or ""
    if not raw.startswith(("postgres://", "postgresql://", "postgresql+psycopg://")):
        return None
    url = Settings.from_env({"APP_ENV": "test", "SECRET_KEY": "x", "DATABASE_URL": raw})
    options = quote(f"-csearch_path={BENCH_SCHEMA}")
    separator = "&" if "?" in url.database_url else "?"
    return f"{url.database_url}{separator}options={options}"


@contextmanager
def databases(only: str | None = None) -> Iterator[list[Database]]:
    """Yield SQLite (a file in a temporary folder) and PostgreSQL when a URL points at one."""
    folder = Path(tempfile.mkdtemp(prefix="jobhooks-bench-"))
    found = [Database("sqlite", f"sqlite:///{folder / 'bench.db'}")]
    postgres = _postgres_url()
    if postgres is not None:
        found.append(Database("postgresql", postgres))
    if only:
        found = [database for database in found if database.name == only]
    try:
        yield found
    finally:
        for database in found:
            database.drop()
        shutil.rmtree(folder, ignore_errors=True)


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
