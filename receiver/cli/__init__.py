"""The command line: ``jobhooks …`` (and ``flask --app wsgi …``, which is the same).

The app's own commands are registered on ``app.cli`` here; the worker's (``reconcile``)
come from the ``flask.commands`` entry points in ``pyproject.toml``, Flask's way for
another package to add commands, so that ``receiver`` never imports ``reconcile``.

Start-up is dominated by imports, so every command module imports only click and Flask
at its top and the rest inside the commands: ``jobhooks --help`` lists the commands without
creating the app (and so without configuration), and a command creates the app only when
it runs, without the web surfaces it does not serve (``create_app(web=False)``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
from flask import Flask
from flask.cli import FlaskGroup, ScriptInfo

__all__ = ["cli", "init_app", "load_app", "main"]

#: Flask's own commands that serve or show the web app: they get every blueprint.
_WEB_COMMANDS = frozenset({"run", "shell", "routes"})
#: Where the group notes, on its ScriptInfo, that the command it runs needs the web app.
_WEB = "jobhooks.web"


def _commands() -> list[Callable[..., Any]]:
    """Return the app's own commands (their modules import nothing heavy at the top)."""
    from receiver.cli.admin import admin_cli
    from receiver.cli.api_keys import api_keys_cli
    from receiver.cli.db import db_cli
    from receiver.cli.events import events_cli
    from receiver.cli.submissions import submissions_cli, webhook_url_command
    from receiver.cli.submit import submit_command
    from receiver.cli.trigger import trigger_command

    return [
        db_cli,
        submissions_cli,
        webhook_url_command,
        submit_command,
        trigger_command,
        events_cli,
        api_keys_cli,
        admin_cli,
    ]


def init_app(app: Flask) -> None:
    """Register the app's commands on ``app.cli``."""
    for command in _commands():
        app.cli.add_command(command)  # type: ignore[arg-type]


def load_app() -> Flask:
    """Create the app from the environment; a bad setting exits 2 with one line.

    Only Flask's ``run``, ``shell`` and ``routes`` get the web surfaces; every other
    command gets the app without them (see :class:`JobhooksGroup`).
    """
    from config.settings import ConfigError
    from receiver import create_app

    ctx = click.get_current_context(silent=True)
    info = ctx.find_object(ScriptInfo) if ctx is not None else None
    web = info is None or bool(info.data.get(_WEB, False))
    try:
        return create_app(web=web)
    except ConfigError as exc:
        sys.stderr.write(f"jobhooks: configuration error: {exc}\n")
        raise SystemExit(2) from None


class JobhooksGroup(FlaskGroup):
    """Flask's group, holding the app's commands itself so that listing them needs no app.

    ``FlaskGroup`` creates the app to list or find the commands registered on ``app.cli``,
    which made ``--help`` validate the configuration and import the whole web app. Here
    the commands are on the group; the app is created when a command runs (each runs in
    an app context: ``AppGroup`` commands and ``with_appcontext`` push one).
    """

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in _WEB_COMMANDS:
            ctx.ensure_object(ScriptInfo).data[_WEB] = True
        # The group's own commands come first in FlaskGroup's lookup too; finding one
        # needs no scan of every installed distribution's entry points for plugins.
        own = self.commands.get(name)
        if own is not None:
            return own
        return super().get_command(ctx, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        # FlaskGroup's own listing creates the app to add app.cli's commands: they are
        # this group's own here, so the built-in and plugin ones complete the list.
        self._load_plugin_commands()
        return sorted(click.Group.list_commands(self, ctx))


cli = JobhooksGroup(
    name="jobhooks",
    create_app=load_app,
    add_version_option=False,
    help="jobhooks: receive, reconcile and submit ittybit jobs. Settings come from the "
    "environment (see the README).",
)
for _command in _commands():
    cli.add_command(_command)  # type: ignore[arg-type]


def main() -> None:
    """Run the ``jobhooks`` console script."""
    cli.main(prog_name="jobhooks")
