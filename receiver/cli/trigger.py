"""``jobhooks trigger``: send a correctly signed test webhook to a running receiver.

It never touches a real submission: it makes a test submission of its own (``test_…``)
and reports on that, or reuses one named with ``--submission``.
"""

from __future__ import annotations

import click
import httpx
from sqlmodel import Session

from receiver.cli.common import database_errors, settings, with_app
from receiver.flows.records import create_test_submission, get_submission
from receiver.flows.trigger import TRIGGER_STATUSES, base_url, build_trigger
from receiver.store.engines import get_engine
from receiver.store.models import utcnow

__all__ = ["trigger_command"]


@click.command("trigger")
@with_app
@click.argument("status", type=click.Choice(TRIGGER_STATUSES, case_sensitive=False))
@click.option(
    "--url",
    "target_url",
    default=None,
    metavar="URL",
    help="Base URL of the receiver, e.g. a deployed https://… (default: http://127.0.0.1:$PORT).",
)
@click.option(
    "--submission",
    "submission_id",
    default=None,
    metavar="ID",
    help="Report on this test submission (test_…) instead of making a new one.",
)
@click.option("--output-url", default=None, help="Output URL of a succeeded job.")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1, 120))
def trigger_command(
    status: str,
    target_url: str | None,
    submission_id: str | None,
    output_url: str | None,
    timeout: float,
) -> None:
    """Send a signed test webhook saying a test submission's job is STATUS; print the answer.

    Makes a test submission (test_…) unless --submission names one. A real submission is
    refused: a test webhook never changes real data. Exit status 1 on a non-2xx answer.
    """
    config = settings()
    try:
        target = base_url(target_url, config)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--url") from None
    with database_errors(), Session(get_engine(), expire_on_commit=False) as session:
        if submission_id is None:
            submission = create_test_submission(session, now=utcnow())
            click.echo(f"made test submission {submission.submission_id}")
        else:
            found = get_submission(session, submission_id)
            if found is None:
                message = f"no submission {submission_id!r}"
                raise click.ClickException(message)
            if not found.is_test:
                message = (
                    f"{submission_id} is a real submission: trigger only reports on test "
                    "submissions (run it without --submission to make one)"
                )
                raise click.ClickException(message)
            submission = found
    request = build_trigger(
        config, submission, status.lower(), base_url=target, now=utcnow(), output_url=output_url
    )
    signed = "Standard Webhooks signed" if request.signed else "signed URL only"
    click.echo(
        f"POST {request.shown_url} (test submission {submission.submission_id}, "
        f"job {request.job_id}, {status.lower()}, {signed})"
    )
    try:
        response = httpx.post(
            request.url, content=request.body, headers=request.headers, timeout=timeout
        )
    except httpx.HTTPError as exc:
        message = f"could not reach {target}: {type(exc).__name__}: {exc}"
        raise click.ClickException(message) from None
    click.echo(f"{response.status_code} {response.text.strip()}")
    if not response.is_success:
        message = f"the receiver answered {response.status_code}"
        raise click.ClickException(message)
