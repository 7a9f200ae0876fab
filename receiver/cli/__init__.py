"""The command line: ``jobhooks …``, one click group holding every command.

The group knows each command by the ``module:function`` that makes it and imports that
module only when the command runs or its own ``--help`` is asked for (click's documented
"lazy loading" pattern): ``jobhooks --help`` imports click and this module, no settings, no
database, no Flask app, and lists each command with the summary kept in :data:`COMMANDS`
(tests/tooling/test_startup.py holds the summaries to the commands' own). A command module
imports what it needs at its top, and a command builds the service without its web surfaces
when it runs (``receiver.cli.common.with_app``). The command line is the composition root of
the commands: it may import any room of ``receiver`` and the worker, ``reconcile``.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

__all__ = ["COMMANDS", "LazyGroup", "cli", "main"]

#: Every command: its name, the ``module:function`` that makes it, and its summary in
#: ``jobhooks --help``.
COMMANDS: dict[str, tuple[str, str]] = {
    "admin": (
        "receiver.cli.admin:admin_cli",
        "Create, list, unlock and delete admin view accounts, and set passwords.",
    ),
    "api-keys": (
        "receiver.cli.api_keys:api_keys_cli",
        "Create, list and revoke keys of the application API.",
    ),
    "db": ("receiver.cli.db:db_cli", "Manage the database schema."),
    "doctor": (
        "receiver.cli.doctor:doctor_command",
        "Check settings, database, ittybit, the endpoint, webhooks and notifications.",
    ),
    "endpoints": (
        "receiver.cli.endpoints:endpoints_cli",
        "Add, list, disable, enable, rotate and remove notification endpoints.",
    ),
    "events": (
        "receiver.cli.events:events_cli",
        "List, show, replay and prune stored webhook deliveries.",
    ),
    "ittybit": (
        "receiver.cli.ittybit:ittybit_cli",
        "Connect to ittybit's webhooks: connect, endpoints, disconnect.",
    ),
    "notify": (
        "receiver.cli.notify:notify_cli",
        "Send the notifications due to your application's endpoints, signed.",
    ),
    "reconcile": (
        "receiver.cli.reconcile:reconcile_command",
        "Catch up from ittybit's event list, then poll the jobs still stuck.",
    ),
    "submissions": (
        "receiver.cli.submissions:submissions_cli",
        "Add, show, import and prune submissions.",
    ),
    "submit": (
        "receiver.cli.submit:submit_command",
        "Create an ittybit job for a submission and print the submission as JSON.",
    ),
    "trigger": (
        "receiver.cli.trigger:trigger_command",
        "Send a signed test webhook saying a test submission's job is STATUS; print the answer.",
    ),
    "webhook-url": (
        "receiver.cli.submissions:webhook_url_command",
        "Print the signed webhook URL of a submission.",
    ),
}


class LazyGroup(click.Group):
    """A group whose commands are ``module:function`` strings, imported when first used."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module_name, _, attribute = self.lazy[cmd_name][0].partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            message = f"{self.lazy[cmd_name][0]} is not a click command"
            raise TypeError(message)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands with their kept summaries: listing them imports none."""
        summaries = {name: summary for name, (_, summary) in self.lazy.items()}
        for name, command in self.commands.items():
            summaries[name] = command.get_short_help_str(limit=formatter.width)
        rows = sorted(summaries.items())
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


cli = LazyGroup(
    name="jobhooks",
    lazy=COMMANDS,
    help="jobhooks: receive, reconcile and submit ittybit jobs. Settings come from the "
    "environment (see the README).",
)


def main() -> None:
    """Run the ``jobhooks`` console script."""
    cli.main(prog_name="jobhooks")
