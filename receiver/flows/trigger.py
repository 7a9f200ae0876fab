"""Build a correctly signed test webhook, as ittybit would send it, for a test submission.

The way payment-API command lines test a webhook endpoint: the job ittybit would send,
signed as ittybit's delivery would be (the submission's signed URL, plus Standard
Webhooks headers when ``ITTYBIT_WEBHOOK_SECRET`` is set). Only test submissions
(``test_…``, made for the purpose) are ever the subject of one: a test webhook must never
change a real submission.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from receiver.core.signing import sign_standard_webhook, webhook_token

# Types only: `jobhooks --help` imports this module for TRIGGER_STATUSES, and the settings
# and the models would bring pydantic and SQLAlchemy with them.
if TYPE_CHECKING:
    from config.settings import Settings
    from receiver.store.models import Submission

__all__ = ["TRIGGER_STATUSES", "TriggerRequest", "base_url", "build_trigger"]

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
    output_url: str | None = None,
    msg_id: str | None = None,
) -> TriggerRequest:
    """Return the signed delivery of a ``status`` job for test ``submission`` to ``base_url``."""
    if not submission.is_test:
        message = f"{submission.submission_id} is not a test submission"
        raise ValueError(message)
    job = submission.job_id or f"job_test_{secrets.token_hex(8)}"
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


def base_url(value: str | None, settings: Settings) -> str:
    """Return the receiver's base URL: ``value``, or the local one on ``$PORT``."""
    if value is None:
        return f"http://127.0.0.1:{settings.port}"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        message = f"must be an http(s) base URL, got {value!r}"
        raise ValueError(message)
    return value.rstrip("/")
