"""``jobhooks admin …``: the accounts that may sign in to the admin view (``/admin``)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click

from receiver.cli.common import database_errors, echo_json, with_app
from receiver.flows.admin_accounts import (
    AdminError,
    create_admin,
    delete_admin,
    list_admins,
    set_password,
    unlock_admin,
)
from receiver.store.engines import get_engine, get_read_engine
from receiver.store.models import utcnow

__all__ = ["admin_cli"]

admin_cli = click.Group(
    "admin", help="Create, list, unlock and delete admin view accounts, and set passwords."
)


_password_stdin = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of stdin instead of prompting.",
)


def _password(from_stdin: bool, prompt: str) -> str:
    """Return the password: the first line of stdin, or asked for twice."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(click.prompt(prompt, hide_input=True, confirmation_prompt=True))


def _stamp(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


@admin_cli.command("create")
@click.argument("email")
@_password_stdin
@with_app
def admin_create(email: str, password_stdin: bool) -> None:
    """Create an account for EMAIL; the password is asked for (twice) or read from stdin."""
    password = _password(password_stdin, "Password")
    with database_errors(AdminError):
        admin = create_admin(get_engine(), email, password, now=utcnow())
    click.echo(f"created admin {admin.email}; sign in at /admin/login")


@admin_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@with_app
def admin_list(as_json: bool) -> None:
    """List the accounts: email, created, last login, and until when an address is locked out."""
    with database_errors():
        admins = list_admins(get_read_engine())
    for admin in admins:
        if as_json:
            echo_json(
                {
                    "email": admin.email,
                    "created_at": admin.created_at.isoformat(),
                    "last_login_at": admin.last_login_at and admin.last_login_at.isoformat(),
                    "locked_until": admin.locked_until and admin.locked_until.isoformat(),
                }
            )
        else:
            locked = ""
            if admin.locked_until is not None and admin.locked_until > utcnow():
                locked = f"  locked until {_stamp(admin.locked_until)}"
            click.echo(
                f"{admin.email}  created {_stamp(admin.created_at)}  "
                f"last login {_stamp(admin.last_login_at)}{locked}"
            )
    if not admins and not as_json:
        click.echo("no admin accounts (create one with `jobhooks admin create EMAIL`)")


@admin_cli.command("delete")
@click.argument("email")
@with_app
def admin_delete(email: str) -> None:
    """Delete the account for EMAIL; its sessions end at once."""
    with database_errors(AdminError):
        delete_admin(get_engine(), email)
    click.echo(f"deleted admin {email.strip().lower()}")


@admin_cli.command("unlock")
@click.argument("email")
@with_app
def admin_unlock(email: str) -> None:
    """Lift the lock-out of EMAIL: its failed logins are forgotten, from every address."""
    with database_errors(AdminError):
        unlock_admin(get_engine(), email)
    click.echo(f"unlocked admin {email.strip().lower()}")


@admin_cli.command("set-password")
@click.argument("email")
@_password_stdin
@with_app
def admin_set_password(email: str, password_stdin: bool) -> None:
    """Give EMAIL a new password; its sessions end and its lock-out is lifted."""
    password = _password(password_stdin, "New password")
    with database_errors(AdminError):
        set_password(get_engine(), email, password)
    click.echo(f"set a new password for admin {email.strip().lower()}; its sessions have ended")
