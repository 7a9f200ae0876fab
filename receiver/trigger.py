"""``flask --app wsgi trigger``: send a correctly signed test webhook for a submission.

The way payment-API command lines test a webhook endpoint: build the job ittybit would
send for the submission, sign it as ittybit's delivery would be (the submission's signed
URL, plus Standard Webhooks headers when ``ITTYBIT_WEBHOOK_SECRET`` is set), post it to
a running receiver — the local one by default, or a deployed one with ``--url`` — and
print the answer.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import click
import httpx
from flask import current_app
from flask.cli import with_appcontext
from sqlmodel import Session

from config.settings import Settings
from receiver.db import get_engine
from receiver.models import Submission, utcnow
from receiver.signing import sign_standard_webhook, webhook_token
from receiver.submissions import get_submission

__all__ = ["TRIGGER_STATUSES", "TriggerRequest", "build_trigger", "trigger_command"]

#: The statuses a test webhook can report, one or more per local status family.
TRIGGER_STATUSES = ("queued", "processing", "succeeded", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class TriggerRequest:
    """One test delivery: where it goes, its body and headers."""

    url: str
    body: bytes
    headers: dict[str, str]
    job_id: str
    signed: bool

    @property
    def shown_url(self) -> str:
        """Return the URL with its token elided: tokens stay out of terminals and logs."""
        base, _, _ = self.url.rpartition("/")
        return f"{base}/…"


def build_trigger(
    settings: Settings,
    submission: Submission,
    status: str,
    *,
    base_url: str,
    now: datetime,
    job_id: str | None = None,
    output_url: str | None = None,
    msg_id: str | None = None,
) -> TriggerRequest:
    """Return the signed delivery of a ``status`` job for ``submission`` to ``base_url``."""
    job = job_id or submission.job_id or f"job_test_{secrets.token_hex(8)}"
    stamp = now.isoformat().replace("+00:00", "Z")
    payload: dict[str, Any] = {
        "id": job,
        "object": "job",
        "kind": "video",
        "status": status,
        "metadata": {
            **(submission.meta or {}),
            "submission_id": submission.submission_id,
            "user_id": submission.user_id,
        },
        "created_at": stamp,
        "updated_at": stamp,
    }
    if status == "succeeded":
        payload["output"] = {"url": output_url or f"https://cdn.example.com/test/{job}.mp4"}
        payload["finished_at"] = stamp
    elif status in ("failed", "cancelled"):
        payload["error"] = {"code": "test", "message": f"test webhook: job {status}"}
        payload["finished_at"] = stamp
    body = json.dumps(payload).encode()
    token = webhook_token(
        settings.secret_keys, submission_id=submission.submission_id, user_id=submission.user_id
    )
    headers = {"Content-Type": "application/json", "User-Agent": "jobhooks-trigger/1"}
    if settings.webhook_secrets:
        message_id = msg_id or f"msg_trigger_{secrets.token_hex(8)}"
        timestamp = int(now.timestamp())
        headers["webhook-id"] = message_id
        headers["webhook-timestamp"] = str(timestamp)
        headers["webhook-signature"] = sign_standard_webhook(
            settings.webhook_secrets[0], msg_id=message_id, timestamp=timestamp, body=body
        )
    return TriggerRequest(
        url=f"{base_url.rstrip('/')}/webhooks/ittybit/{token}",
        body=body,
        headers=headers,
        job_id=job,
        signed=bool(settings.webhook_secrets),
    )


def _base_url(value: str | None, settings: Settings) -> str:
    if value is None:
        return f"http://127.0.0.1:{settings.port}"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        message = f"--url must be an http(s) base URL, got {value!r}"
        raise click.BadParameter(message, param_hint="--url")
    return value.rstrip("/")


@click.command("trigger")
@with_appcontext
@click.argument("submission_id")
@click.argument("status", type=click.Choice(TRIGGER_STATUSES, case_sensitive=False))
@click.option(
    "--url",
    "base_url",
    default=None,
    metavar="URL",
    help="Base URL of the receiver, e.g. a deployed https://… (default: http://127.0.0.1:$PORT).",
)
@click.option("--job-id", default=None, help="Job id to report (default: the submission's).")
@click.option("--output-url", default=None, help="Output URL of a succeeded job.")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1, 120))
def trigger_command(
    submission_id: str,
    status: str,
    base_url: str | None,
    job_id: str | None,
    output_url: str | None,
    timeout: float,
) -> None:
    """Send a signed test webhook saying SUBMISSION_ID's job is STATUS; print the answer."""
    # Imported here: receiver.cli imports this module to register the command.
    from receiver.cli import database_errors

    settings: Settings = current_app.extensions["jobhooks.settings"]
    target = _base_url(base_url, settings)
    with database_errors(), Session(get_engine()) as session:
        submission = get_submission(session, submission_id)
    if submission is None:
        message = f"no submission {submission_id!r}"
        raise click.ClickException(message)
    if job_id is None and submission.job_id is None:
        click.echo(f"{submission_id} has no job id yet; reporting a test job id", err=True)
    request = build_trigger(
        settings,
        submission,
        status.lower(),
        base_url=target,
        now=utcnow(),
        job_id=job_id,
        output_url=output_url,
    )
    signed = "Standard Webhooks signed" if request.signed else "signed URL only"
    click.echo(f"POST {request.shown_url} (job {request.job_id}, {status.lower()}, {signed})")
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
