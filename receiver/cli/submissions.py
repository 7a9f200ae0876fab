"""``jobhooks submissions …`` and ``jobhooks webhook-url``: submissions off the hot path."""

from __future__ import annotations

from typing import TextIO

import click
from sqlmodel import Session

from receiver.cli.common import database_errors, echo_json, parse_pairs, settings, with_app
from receiver.flows.records import (
    ImportRefused,
    ImportReport,
    InvalidSubmission,
    create_submission,
    get_submission,
    import_submissions,
    prune_test_submissions,
    submission_json,
    webhook_url,
)
from receiver.store.engines import get_engine, get_read_engine
from receiver.store.models import Submission

__all__ = ["submissions_cli", "webhook_url_command"]

submissions_cli = click.Group("submissions", help="Add, show, import and prune submissions.")


@submissions_cli.command("add")
@click.argument("submission_id")
@click.option("--user-id", required=True, help="The owner of the submission.")
@click.option("--input", "input_url", required=True, help="URL of the uploaded video.")
@click.option("--job-id", default=None, help="The ittybit job id, if a job exists already.")
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Extra metadata (repeatable).")
@with_app
def submissions_add(
    submission_id: str, user_id: str, input_url: str, job_id: str | None, meta: tuple[str, ...]
) -> None:
    """Add a submission and print it as JSON.

    SUBMISSION_ID is 1-200 of A-Z a-z 0-9 . _ : - (as the API and import require).
    """
    metadata = parse_pairs(meta, "--meta")
    with database_errors(InvalidSubmission), Session(get_engine()) as session:
        submission = create_submission(
            session,
            submission_id=submission_id,
            user_id=user_id,
            input_url=input_url,
            job_id=job_id,
            metadata=metadata,
        )
        echo_json(submission_json(submission))


@submissions_cli.command("show")
@click.argument("submission_id")
@with_app
def submissions_show(submission_id: str) -> None:
    """Print a submission as JSON."""
    with database_errors(), Session(get_read_engine()) as session:
        submission = _existing(session, submission_id)
        echo_json(submission_json(submission))


@submissions_cli.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option(
    "--batch",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 10000),
    help="Rows per INSERT on SQLite (PostgreSQL copies them all at once).",
)
@click.option("--strict", is_flag=True, help="Import nothing if any row would be skipped.")
@with_app
def submissions_import(file: TextIO, batch: int, strict: bool) -> None:
    """Import submissions from a JSON Lines FILE ('-' for stdin); nothing is written on error.

    Each skipped row is named on stderr: its line, its submission id and why.
    """
    with database_errors():
        try:
            report = import_submissions(get_engine(), file, batch=batch, strict=strict)
        except ImportRefused as exc:
            _echo_skips(exc.report)
            raise click.ClickException(f"{exc} (--strict); nothing was imported") from None
        except InvalidSubmission as exc:
            raise click.ClickException(f"{exc}; nothing was imported") from None
    _echo_skips(report)
    echo_json({"read": report.read, "inserted": report.inserted, "skipped": report.skipped})


def _echo_skips(report: ImportReport) -> None:
    for skip in report.skips:
        click.echo(f"line {skip.line}: {skip.submission_id} skipped: {skip.reason}", err=True)


def _existing(session: Session, submission_id: str) -> Submission:
    """Return the submission, or end the command saying there is none."""
    submission = get_submission(session, submission_id)
    if submission is None:
        message = f"no submission {submission_id!r}"
        raise click.ClickException(message)
    return submission


@click.command("webhook-url")
@click.argument("submission_id")
@with_app
def webhook_url_command(submission_id: str) -> None:
    """Print the signed webhook URL of a submission."""
    with database_errors(), Session(get_read_engine()) as session:
        submission = _existing(session, submission_id)
        click.echo(
            webhook_url(
                settings(), submission_id=submission.submission_id, user_id=submission.user_id
            )
        )


@submissions_cli.command("prune-tests")
@with_app
def submissions_prune_tests() -> None:
    """Delete every test submission (made by trigger) and what was recorded about it."""
    with database_errors():
        deleted = prune_test_submissions(get_engine())
    click.echo(f"deleted {deleted} test submission(s)")
