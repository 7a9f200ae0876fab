"""The command line: ``jobhooks …`` (and ``flask --app wsgi …``, which is the same).

The app's own commands are registered on ``app.cli`` here; the worker's (``reconcile``)
come from the ``flask.commands`` entry points in ``pyproject.toml``, Flask's way for
another package to add commands, so that ``receiver`` never imports ``reconcile``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from flask import Flask
from flask.cli import FlaskGroup

from config.settings import ConfigError

__all__ = ["cli", "init_app", "load_app", "main"]


def init_app(app: Flask) -> None:
    """Register the app's commands on ``app.cli``."""
    from receiver.cli.admin import admin_cli
    from receiver.cli.api_keys import api_keys_cli
    from receiver.cli.db import db_cli
    from receiver.cli.events import events_cli
    from receiver.cli.submissions import submissions_cli, webhook_url_command
    from receiver.cli.submit import submit_command
    from receiver.cli.trigger import trigger_command

    commands: list[Callable[..., Any]] = [
        db_cli,
        submissions_cli,
        webhook_url_command,
        submit_command,
        trigger_command,
        events_cli,
        api_keys_cli,
        admin_cli,
    ]
    for command in commands:
        app.cli.add_command(command)  # type: ignore[arg-type]


def load_app() -> Flask:
    """Create the app from the environment; a bad setting exits 2 with one line."""
    from receiver import create_app

    try:
        return create_app()
    except ConfigError as exc:
        sys.stderr.write(f"jobhooks: configuration error: {exc}\n")
        raise SystemExit(2) from None


cli = FlaskGroup(
    name="jobhooks",
    create_app=load_app,
    add_version_option=False,
    help="jobhooks: receive, reconcile and submit ittybit jobs. Settings come from the "
    "environment (see the README).",
)


def main() -> None:
    """Run the ``jobhooks`` console script."""
    cli.main(prog_name="jobhooks")
