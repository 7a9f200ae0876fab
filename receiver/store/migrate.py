"""Alembic wiring: the migrations folder, driven from the app's settings.

The folder ships inside the package (``receiver/store/migrations``), so ``jobhooks db upgrade``
finds it wherever the package is installed, not only in a checkout (``pip install -e .``).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

__all__ = ["MIGRATIONS", "alembic_config", "head_revision", "upgrade"]

MIGRATIONS = Path(__file__).resolve().with_name("migrations")


def alembic_config(database_url: str) -> Config:
    """Return an Alembic config for ``database_url`` without reading alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Percent signs in passwords would read as interpolation; escape them.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


@cache
def head_revision() -> str | None:
    """Return the newest revision the code knows."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` through ``engine``."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
