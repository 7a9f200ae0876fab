"""``jobhooks submit``: create a submission's ittybit job with its metadata and webhook URL.

Exit codes: 0 done, 1 the submit failed (the submission stays pending), 2 bad arguments
or configuration.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import click

from config.settings import Settings
from receiver.cli.common import (
    ConfigurationError,
    database_errors,
    echo_json,
    parse_pairs,
    settings,
    with_app,
)
from receiver.flows.outbox import get_outbox
from receiver.flows.records import InvalidSubmission, submission_json
from receiver.flows.submit import RESERVED_METADATA, submit_job
from receiver.ittybit.client import client_from_settings
from receiver.store.engines import get_engine
from receiver.store.models import utcnow

__all__ = ["require_api", "submit_command"]


def require_api(settings: Settings) -> None:
    """Refuse to start without an API key, naming the variable."""
    if not settings.ittybit_api_key:
        message = "configuration error: ITTYBIT_API_KEY: required by submit and reconcile"
        raise ConfigurationError(message)


def _json_or_text(value: str) -> Any:
    """Read ``1280``, ``true`` or ``[1,2]`` as JSON; anything else stays text."""
    try:
        return json.loads(value)
    except ValueError:
        return value


@click.command("submit")
@click.option("--input", "input_url", required=True, help="URL of the video to process.")
@click.option("--user-id", required=True, help="The owner of the submission.")
@click.option(
    "--submission-id", default=None, help="Create or reuse this submission [default: a new id]."
)
@click.option("--kind", default="video", show_default=True, help="The ittybit job kind.")
@click.option(
    "--option",
    "job_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A job option (repeatable); values that parse as JSON are sent as JSON.",
)
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Extra metadata (repeatable).")
@with_app
def submit_command(
    input_url: str,
    user_id: str,
    submission_id: str | None,
    kind: str,
    job_options: tuple[str, ...],
    meta: tuple[str, ...],
) -> None:
    """Create an ittybit job for a submission and print the submission as JSON.

    Creates the submission, or reuses it when --submission-id exists. On an API
    failure it stays pending with the error; running the same command again
    completes it without ever creating a second job.
    """
    config = settings()
    require_api(config)
    metadata = parse_pairs(meta, "--meta")
    reserved = RESERVED_METADATA & set(metadata)
    if reserved:
        message = f"{', '.join(sorted(reserved))} is set from the submission"
        raise click.BadParameter(message, param_hint="--meta")
    options = {
        key: _json_or_text(value) for key, value in parse_pairs(job_options, "--option").items()
    }
    if submission_id is None:
        submission_id = f"sub_{secrets.token_hex(10)}"
    with (
        database_errors(InvalidSubmission),
        client_from_settings(config, max_connections=1) as client,
    ):
        result = submit_job(
            get_engine(),
            client,
            config,
            submission_id=submission_id,
            user_id=user_id,
            input_url=input_url,
            kind=kind,
            options=options,
            metadata=metadata,
            now=utcnow(),
            outbox=get_outbox(),
        )
    echo_json(submission_json(result.submission))
    if result.error is not None:
        message = (
            f"submit failed: {result.error}; {submission_id} stays pending, "
            "run the same command again to complete it"
        )
        raise click.ClickException(message)
