"""Shared test constants and builders: secrets, signed headers, ittybit payloads, and the
submissions and webhook URLs most tests start from."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from receiver.core.signing import sign_standard_webhook, webhook_token
from receiver.flows.outbox import Outbox
from receiver.flows.records import create_submission
from receiver.store.models import Submission, WebhookEvent

SECRET_KEY = "test-secret-key-newest-0123456789"
OLD_SECRET_KEY = "test-secret-key-older-0123456789"
WEBHOOK_KEY = b"jobhooks-test-webhook-key-32byte"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(WEBHOOK_KEY).decode()
OTHER_WEBHOOK_KEY = b"another-deployment-webhook-key!!"


def job_payload(
    job_id: str = "job_abc123",
    status: str = "succeeded",
    *,
    submission_id: str | None = "sub_1",
    user_id: str | None = "user_1",
    output: Any = None,
    updated_at: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """Return a bare ittybit job, shaped like the seed's example."""
    metadata = {}
    if submission_id is not None:
        metadata["submission_id"] = submission_id
    if user_id is not None:
        metadata["user_id"] = user_id
    payload: dict[str, Any] = {
        "id": job_id,
        "object": "job",
        "status": status,
        "metadata": metadata,
    }
    if output is None and status == "succeeded":
        output = {"url": f"https://cdn.example.com/{job_id}.mp4"}
    if output is not None:
        payload["output"] = output
    if updated_at is not None:
        payload["updated_at"] = updated_at
    payload.update(extra)
    return payload


def event_envelope(
    job: dict[str, Any], *, event_id: str = "evt_1", kind: str | None = None
) -> dict[str, Any]:
    """Wrap a job in an ittybit event envelope."""
    return {
        "id": event_id,
        "object": "event",
        "kind": kind or f"job.{job.get('status', 'updated')}",
        "data": job,
        "created_at": int(time.time()),
    }


def encode(payload: Any) -> bytes:
    """Serialise a payload the way ittybit sends it."""
    return json.dumps(payload).encode()


def signed_headers(
    body: bytes,
    *,
    msg_id: str = "msg_1",
    timestamp: int | None = None,
    key: bytes = WEBHOOK_KEY,
    prefix: str = "webhook",
) -> dict[str, str]:
    """Return Content-Type plus Standard Webhooks headers signing ``body``."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": "application/json",
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(stamp),
        f"{prefix}-signature": sign_standard_webhook(
            key, msg_id=msg_id, timestamp=stamp, body=body
        ),
    }


def quiet_outbox() -> Outbox:
    """An outbox with no endpoint of its own: changes announce nothing (NOTIFY_URL unset)."""
    return Outbox(render=dict)


def add_submission(
    engine: Engine,
    submission_id: str = "sub_1",
    user_id: str = "user_1",
    *,
    job_id: str | None = None,
) -> None:
    """Add a pending submission through the service's own code."""
    with Session(engine) as session:
        create_submission(
            session,
            submission_id=submission_id,
            user_id=user_id,
            input_url=f"https://uploads.example.com/{submission_id}.mp4",
            job_id=job_id,
        )


def token_url(submission_id: str = "sub_1", user_id: str = "user_1", key: str = SECRET_KEY) -> str:
    """Return the path of a submission's signed webhook URL."""
    token = webhook_token([key], submission_id=submission_id, user_id=user_id)
    return f"/webhooks/ittybit/{token}"


def stored_events(engine: Engine) -> list[dict[str, Any]]:
    """Return every inbox row, oldest first."""
    table = WebhookEvent.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table).order_by(table.c.id)).all()
    return [dict(row._mapping) for row in rows]


def stored_submission(engine: Engine, submission_id: str = "sub_1") -> dict[str, Any]:
    """Return one submission's row as a dict."""
    table = Submission.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.submission_id == submission_id)).one()
    return dict(row._mapping)


def wait_until(check: Any, timeout: float = 20.0) -> bool:
    """Poll ``check`` until it is true or ``timeout`` seconds pass; say which it was."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return bool(check())
