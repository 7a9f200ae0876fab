"""Command line: ``flask --app wsgi db upgrade``, ``submissions …`` and ``webhook-url``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from config.settings import Settings
from receiver.db import get_engine
from receiver.migrate import upgrade
from receiver.submissions import (
    InvalidSubmission,
    create_submission,
    get_submission,
    import_submissions,
    submission_json,
    webhook_url,
)
from receiver.trigger import trigger_command

__all__ = ["echo_json", "init_app", "parse_pairs", "settings"]

db_cli = AppGroup("db", help="Manage the database schema.")
submissions_cli = AppGroup("submissions", help="Add, show and import submissions.")


def settings() -> Settings:
    """Return the current app's settings."""
    value: Settings = current_app.extensions["jobhooks.settings"]
    return value


def echo_json(value: Any) -> None:
    """Print one JSON object on one line."""
    click.echo(json.dumps(value, default=str))


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


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn database failures into one clear line and exit status 1."""
    try:
        yield
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        message = (
            f"database error: {detail[:200]} "
            "(is DATABASE_URL right, and has `flask --app wsgi db upgrade` run?)"
        )
        raise click.ClickException(message) from None


@db_cli.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def db_upgrade(revision: str) -> None:
    """Apply database migrations."""
    with database_errors():
        upgrade(get_engine(), revision)
    click.echo(f"database upgraded to {revision}")


@submissions_cli.command("add")
@click.argument("submission_id")
@click.option("--user-id", required=True, help="The owner of the submission.")
@click.option("--input", "input_url", required=True, help="URL of the uploaded video.")
@click.option("--job-id", default=None, help="The ittybit job id, if a job exists already.")
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Extra metadata (repeatable).")
def submissions_add(
    submission_id: str, user_id: str, input_url: str, job_id: str | None, meta: tuple[str, ...]
) -> None:
    """Add a submission and print it as JSON."""
    metadata = parse_pairs(meta, "--meta")
    with database_errors(), Session(get_engine()) as session:
        try:
            submission = create_submission(
                session,
                submission_id=submission_id,
                user_id=user_id,
                input_url=input_url,
                job_id=job_id,
                metadata=metadata,
            )
        except InvalidSubmission as exc:
            raise click.ClickException(str(exc)) from None
        echo_json(submission_json(submission, settings()))


@submissions_cli.command("show")
@click.argument("submission_id")
def submissions_show(submission_id: str) -> None:
    """Print a submission as JSON."""
    with database_errors(), Session(get_engine()) as session:
        submission = get_submission(session, submission_id)
        if submission is None:
            message = f"no submission {submission_id!r}"
            raise click.ClickException(message)
        echo_json(submission_json(submission, settings()))


@submissions_cli.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--batch", default=1000, show_default=True, type=click.IntRange(1, 10000))
def submissions_import(file: TextIO, batch: int) -> None:
    """Import submissions from a JSON Lines FILE ('-' for stdin); nothing is written on error."""
    with database_errors():
        try:
            report = import_submissions(get_engine(), file, batch=batch)
        except InvalidSubmission as exc:
            raise click.ClickException(f"{exc}; nothing was imported") from None
    echo_json({"read": report.read, "inserted": report.inserted, "skipped": report.skipped})


@click.command("webhook-url")
@click.argument("submission_id")
@with_appcontext  # `flask` pushes one, app.cli and the test runner do not
def webhook_url_command(submission_id: str) -> None:
    """Print the signed webhook URL of a submission."""
    with database_errors(), Session(get_engine()) as session:
        submission = get_submission(session, submission_id)
        if submission is None:
            message = f"no submission {submission_id!r}"
            raise click.ClickException(message)
        click.echo(
            webhook_url(
                settings(), submission_id=submission.submission_id, user_id=submission.user_id
            )
        )


_COMMANDS: list[Callable[..., Any]] = [
    db_cli,
    submissions_cli,
    webhook_url_command,
    trigger_command,
]


def init_app(app: Flask) -> None:
    """Register the commands on ``app.cli``."""
    for command in _COMMANDS:
        app.cli.add_command(command)  # type: ignore[arg-type]
