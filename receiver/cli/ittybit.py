"""``jobhooks ittybit …``: register the project-level webhook endpoint, list it, remove it.

Since 2025-12 ittybit sends webhooks to endpoints managed at ``/webhooks/endpoints``, each
with a ``whsec_`` secret. ``connect`` makes (or finds, by URL) the one for this service's
``/webhooks/ittybit``, so setting up needs no hand-written request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict

import click

from receiver.cli.common import echo_json, echo_table, settings, with_app
from receiver.ittybit.client import (
    ApiError,
    AuthError,
    IttybitClient,
    WebhookEndpoint,
    client_from_settings,
)

__all__ = ["TASK_TOPICS", "auth_message", "ittybit_cli"]

#: What the service acts on: every task change (``run.*`` only when asked for).
TASK_TOPICS = ("task.created", "task.updated", "task.succeeded", "task.failed")
#: Answers meaning this API has no endpoint resource: per-job webhook URLs are used instead.
_NO_RESOURCE = frozenset({404, 405, 501})
NO_RESOURCE_MESSAGE = (
    "this ittybit API has no webhook endpoint resource (HTTP {status}): each job carries "
    "its own signed webhook_url instead, as `jobhooks submit` does; nothing to connect"
)


@click.group("ittybit")
def ittybit_cli() -> None:
    """Connect to ittybit's webhooks: connect, endpoints, disconnect."""


@contextmanager
def _client() -> Iterator[IttybitClient]:
    """Yield a client; turn a refused key into one clear line (exit 1)."""
    with client_from_settings(settings(), max_connections=1) as client:
        try:
            yield client
        except AuthError as exc:
            raise click.ClickException(auth_message(exc)) from None


def auth_message(exc: AuthError) -> str:
    """Say that the key is wrong, and where it is set."""
    return (
        f"ittybit refused the API key (HTTP {exc.status}): check ITTYBIT_API_KEY "
        "(and ITTYBIT_API_URL)"
    )


def _split_topics(value: str | None) -> list[str]:
    if not value:
        return list(TASK_TOPICS)
    return [topic.strip() for topic in value.split(",") if topic.strip()]


def _connect(client: IttybitClient, url: str, topics: list[str]) -> tuple[str, WebhookEndpoint]:
    """Find the endpoint for ``url`` (updating its topics) or create it: never a second one."""
    found = next((item for item in client.list_endpoints() if item.url == url), None)
    if found is None:
        return "created", client.create_endpoint(url=url, topics=topics)
    if sorted(found.topics) == sorted(topics):
        return "unchanged", found
    return "updated", client.update_endpoint(found.id, topics=topics)


@ittybit_cli.command("connect")
@with_app
@click.option("--url", "base_url", default=None, metavar="BASE", help="Default: PUBLIC_URL.")
@click.option(
    "--topics",
    default=None,
    metavar="A,B",
    help=f"Comma-separated topics (default: {','.join(TASK_TOPICS)}).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def connect_command(base_url: str | None, topics: str | None, as_json: bool) -> None:
    """Register BASE/webhooks/ittybit with ittybit, or find it and update its topics."""
    url = (base_url or settings().public_url).rstrip("/") + "/webhooks/ittybit"
    wanted = _split_topics(topics)
    with _client() as client:
        try:
            action, endpoint = _connect(client, url, wanted)
        except AuthError:
            raise
        except ApiError as exc:
            if exc.status not in _NO_RESOURCE:
                raise click.ClickException(exc.message) from None
            if as_json:
                echo_json({"action": "unsupported", "status": exc.status, "url": url})
            else:
                click.echo(NO_RESOURCE_MESSAGE.format(status=exc.status))
            return
    if as_json:
        echo_json({"action": action, **asdict(endpoint)})
        return
    click.echo(f"{action} endpoint {endpoint.id} ({endpoint.status}) for {endpoint.url}")
    click.echo(f"topics: {', '.join(endpoint.topics) or '-'}")
    if endpoint.secret:
        click.echo(f"secret: {endpoint.secret}")
        click.echo(f"set it:  heroku config:set ITTYBIT_WEBHOOK_SECRET={endpoint.secret}")
        click.echo(f"or, in development, in .env: ITTYBIT_WEBHOOK_SECRET={endpoint.secret}")
    elif action == "created":
        click.echo("ittybit returned no secret: copy it from ittybit's dashboard")
    if endpoint.status != "active":
        click.echo(f"warning: the endpoint is {endpoint.status}: ittybit sends it nothing")


@ittybit_cli.command("endpoints")
@with_app
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per endpoint.")
def endpoints_command(as_json: bool) -> None:
    """List the project's webhook endpoints on ittybit."""
    with _client() as client:
        try:
            endpoints = client.list_endpoints()
        except AuthError:
            raise
        except ApiError as exc:
            if exc.status in _NO_RESOURCE:
                raise click.ClickException(NO_RESOURCE_MESSAGE.format(status=exc.status)) from None
            raise click.ClickException(exc.message) from None
    rows = [{**asdict(item), "topics": ",".join(item.topics), "secret": None} for item in endpoints]
    if as_json:
        for row in rows:
            echo_json({key: value for key, value in row.items() if key != "secret"})
        return
    columns = (
        ("ID", "id", 22),
        ("URL", "url", 48),
        ("TOPICS", "topics", 40),
        ("STATUS", "status", 9),
        ("VERIFIED", "verified", 8),
    )
    echo_table(columns, rows)


@ittybit_cli.command("disconnect")
@with_app
@click.argument("endpoint_id", metavar="ID")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def disconnect_command(endpoint_id: str, yes: bool) -> None:
    """Remove the webhook endpoint ID from ittybit (it then sends it nothing)."""
    if not yes:
        click.confirm(f"Remove endpoint {endpoint_id} from ittybit?", abort=True)
    with _client() as client:
        try:
            client.delete_endpoint(endpoint_id)
        except AuthError:
            raise
        except ApiError as exc:
            raise click.ClickException(exc.message) from None
    click.echo(f"removed endpoint {endpoint_id}")
