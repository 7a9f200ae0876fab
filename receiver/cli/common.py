"""What the commands share: settings, JSON and table output, ``k=v`` options, durations,
database errors."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
from flask import current_app

# Every command module imports this one, `jobhooks --help` included: what reaches the
# settings or the database is imported inside the function that uses it.
if TYPE_CHECKING:
    from config.settings import Settings

__all__ = [
    "ConfigurationError",
    "Duration",
    "Since",
    "database_errors",
    "echo_json",
    "echo_table",
    "parse_pairs",
    "settings",
]


def settings() -> Settings:
    """Return the current app's settings."""
    value: Settings = current_app.extensions["jobhooks.settings"]
    return value


def echo_json(value: Any) -> None:
    """Print one JSON object on one line."""
    click.echo(json.dumps(value, default=str))


def _cell(value: Any, width: int) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, datetime):
        text = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    else:
        text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def echo_table(columns: Iterable[tuple[str, str, int]], rows: Iterable[Mapping[str, Any]]) -> None:
    """Print ``rows`` as a plain table of ``(title, key, width)`` columns, one line each."""
    columns = tuple(columns)
    click.echo("  ".join(title.ljust(width) for title, _, width in columns).rstrip())
    for row in rows:
        click.echo(
            "  ".join(_cell(row[key], width).ljust(width) for _, key, width in columns).rstrip()
        )


def parse_pairs(pairs: tuple[str, ...], option: str) -> dict[str, str]:
    """Turn repeated ``k=v`` options into a dict, or fail with a usage error."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            message = f"{option} expects key=value, got {pair!r}"
            raise click.BadParameter(message, param_hint=option)
        result[key.strip()] = value
    return result


class ConfigurationError(click.ClickException):
    """A setting the command needs is missing: one line, exit status 2."""

    exit_code = 2


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn database failures into one clear line and exit status 1."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        message = (
            f"database error: {detail[:200]} "
            "(is DATABASE_URL right, and has `jobhooks db upgrade` run?)"
        )
        raise click.ClickException(message) from None


class Duration(click.ParamType):  # type: ignore[type-arg]
    """A duration: ``90``, ``30s``, ``15m``, ``2h``, ``1d``; ``positive`` refuses zero."""

    name = "duration"

    def __init__(self, *, positive: bool = False) -> None:
        self.positive = positive

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            from config.settings import parse_duration

            try:
                seconds = parse_duration(str(value))
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        if self.positive and seconds <= 0:
            self.fail("must be greater than zero", param, ctx)
        return seconds


class Since(click.ParamType):  # type: ignore[type-arg]
    """A point in time: a duration ago (``2h``, ``7d``) or an ISO-8601 time."""

    name = "since"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        from receiver.flows.history import parse_since
        from receiver.store.models import utcnow

        try:
            return parse_since(str(value), now=utcnow())
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
