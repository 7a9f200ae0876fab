"""``jobhooks db upgrade``: apply the migrations (the Procfile's ``release`` process)."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from receiver.cli.common import database_errors

__all__ = ["db_cli"]

db_cli = AppGroup("db", help="Manage the database schema.")


@db_cli.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def db_upgrade(revision: str) -> None:
    """Apply database migrations."""
    from receiver.store.engines import get_engine
    from receiver.store.migrate import upgrade

    with database_errors():
        upgrade(get_engine(), revision)
    click.echo(f"database upgraded to {revision}")
