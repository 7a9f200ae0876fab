"""``jobhooks api-keys create|list|revoke``: the keys of the application API."""

from __future__ import annotations

from datetime import datetime

import click

from receiver.cli.common import database_errors, echo_json, with_app
from receiver.flows.api_keys import ApiKeyError, create_key, list_keys, revoke_key
from receiver.store.engines import get_engine, get_read_engine
from receiver.store.models import utcnow

__all__ = ["api_keys_cli"]

api_keys_cli = click.Group("api-keys", help="Create, list and revoke keys of the application API.")


@api_keys_cli.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help='Print {"name": …, "key": …}.')
@with_app
def api_keys_create(name: str, as_json: bool) -> None:
    """Make a key named NAME and print it once: only its hash is kept."""
    with database_errors(ApiKeyError):
        key = create_key(get_engine(), name, now=utcnow())
    if as_json:
        echo_json({"name": name.strip(), "key": key})
        return
    click.echo(f"API key {name.strip()!r} (shown once; only its hash is stored):")
    click.echo(key)


@api_keys_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per key.")
@with_app
def api_keys_list(as_json: bool) -> None:
    """Show every key's name, when it was made and last used, and whether it is revoked."""
    with database_errors(), get_read_engine().connect() as conn:
        keys = list_keys(conn)
    if as_json:
        for key in keys:
            echo_json(
                {
                    name: value.isoformat() if isinstance(value, datetime) else value
                    for name, value in key.items()
                }
            )
        return
    if not keys:
        click.echo("no API keys: make one with `jobhooks api-keys create NAME`")
        return

    def stamp(value: object) -> str:
        return "-" if value is None else str(value)[:19]

    click.echo(f"{'name':<24} {'created':<20} {'last used':<20} revoked")
    for key in keys:
        click.echo(
            f"{key['name']:<24} {stamp(key['created_at']):<20} "
            f"{stamp(key['last_used_at']):<20} {stamp(key['revoked_at'])}"
        )


@api_keys_cli.command("revoke")
@click.argument("name")
@with_app
def api_keys_revoke(name: str) -> None:
    """End the key named NAME at once: its next request is refused (401)."""
    with database_errors(ApiKeyError):
        revoke_key(get_engine(), name, now=utcnow())
    click.echo(f"revoked API key {name.strip()!r}")
