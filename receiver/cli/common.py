"""What the commands share: the app they run in, settings, JSON and table output, ``k=v``
options, durations, database errors."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any, ParamSpec, TypeVar

import click
from flask import Flask, current_app
from flask.cli import ScriptInfo
from sqlalchemy.exc import SQLAlchemyError

from config.settings import ConfigError, Settings, parse_duration
from receiver import create_app
from receiver.flows.history import parse_since
from receiver.store.models import utcnow

__all__ = [
    "ConfigurationError",
    "Duration",
    "Since",
    "database_errors",
    "echo_json",
    "echo_table",
    "load_app",
    "parse_pairs",
    "settings",
    "with_app",
    "with_process_app",
]

P = ParamSpec("P")
R = TypeVar("R")

#: What a one-off command logs unless LOG_LEVEL says otherwise: only what is wrong.
ONE_OFF_LOG_LEVEL = "warning"


def load_app(*, process: bool) -> Flask:
    """Create the app, without its web surfaces, from the environment.

    A bad setting exits 2 with one line. A one-off command (``process`` false) logs at
    WARNING unless LOG_LEVEL is set: its stderr stays for its own messages. A process of
    the Procfile (``reconcile --loop``, ``notify --loop``, ``db upgrade``) logs at
    LOG_LEVEL (default INFO), as the web process does.
    """
    log_level = None if process or "LOG_LEVEL" in os.environ else ONE_OFF_LOG_LEVEL
    try:
        return create_app(web=False, log_level=log_level)
    except ConfigError as exc:
        sys.stderr.write(f"jobhooks: configuration error: {exc}\n")
        raise SystemExit(2) from None


def _with_app(f: Callable[P, R], *, process: bool) -> Callable[P, R]:
    @click.pass_context
    def run(ctx: click.Context, /, *args: Any, **kwargs: Any) -> Any:
        if not current_app:
            # A test runner (FlaskCliRunner) hands its own app over in a ScriptInfo.
            info = ctx.find_object(ScriptInfo)
            if info is not None and info.create_app is not None:
                app = info.load_app()
            else:
                app = load_app(process=process or bool(kwargs.get("loop")))
            ctx.with_resource(app.app_context())
        return ctx.invoke(f, *args, **kwargs)

    return functools.update_wrapper(run, f)


def with_app(f: Callable[P, R]) -> Callable[P, R]:
    """Run the command in the app's context; it is a one-off unless given ``--loop``."""
    return _with_app(f, process=False)


def with_process_app(f: Callable[P, R]) -> Callable[P, R]:
    """Run the command in the app's context as a process of the Procfile (its logs at
    LOG_LEVEL)."""
    return _with_app(f, process=True)


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
    """A setting the command needs is missing: one line, exit status 2.

    Said as a setting the app refuses is (``jobhooks: configuration error: …``), not with
    click's ``Error:``: both are the same kind of trouble, and a script may look for it.
    """

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"jobhooks: {self.format_message()}", file=file or sys.stderr)


@contextmanager
def database_errors(*refused: type[Exception]) -> Iterator[None]:
    """Turn database failures into one clear line and exit status 1.

    The ``refused`` errors (a flow's own ``ValueError``: bad input, a name taken) end the
    command the same way, in their own words.
    """
    try:
        yield
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        message = (
            f"database error: {detail[:200]} "
            "(is DATABASE_URL right, and has `jobhooks db upgrade` run?)"
        )
        raise click.ClickException(message) from None
    except refused as exc:
        raise click.ClickException(str(exc)) from None


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
        try:
            return parse_since(str(value), now=utcnow())
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
