"""``jobhooks db upgrade``: apply the migrations (the Procfile's ``release`` process)."""

from __future__ import annotations

import click

from receiver.cli.common import database_errors, with_process_app
from receiver.store.engines import get_engine
from receiver.store.migrate import upgrade

__all__ = ["db_cli"]

db_cli = click.Group("db", help="Manage the database schema.")


@db_cli.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@with_process_app  # the Procfile's release process: its log lines are kept
def db_upgrade(revision: str) -> None:
    """Apply database migrations."""
    with database_errors():
        upgrade(get_engine(), revision)
    click.echo(f"database upgraded to {revision}")
