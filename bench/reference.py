"""The stack's own limit: the webhook's work done by hand on the raw database driver.

A minimal Flask app under the same gunicorn as the real one. For each delivery it does
what the real handler must: verify the Standard Webhooks signature over the raw bytes (and
the signed URL's token when there is one), parse the JSON, then insert the same inbox row
and make the same submission update in one transaction, through ``sqlite3`` or ``psycopg``
with no SQLAlchemy, no rules, no logging, no metrics. What the real app spends beyond this
is what its structure costs; ``bench/README.md`` says where it goes.

Not a product: it trusts the payload's shape (the benchmark's deliveries) and answers 200.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

from flask import Flask, request
from itsdangerous import BadSignature, URLSafeSerializer

from bench.rawdb import worker_connection

app = Flask(__name__)

_URL = os.environ["DATABASE_URL"]
_SQLITE = _URL.startswith("sqlite")
_WEBHOOK_KEY = base64.b64decode(os.environ["ITTYBIT_WEBHOOK_SECRET"].removeprefix("whsec_"))
_TOKENS = URLSafeSerializer(os.environ["SECRET_KEY"], salt="jobhooks.webhook-url.v1")
_TOLERANCE = 300
_HEADERS = ("content-type", "user-agent", "webhook-id", "webhook-timestamp")

_INSERT = (
    "INSERT INTO webhook_events (dedupe_key, received_at, source, delivery_id, job_id,"
    " submission_id, provider_status, body, headers, outcome, reason, claimed_user_id)"
    " VALUES ({0}) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"
)
_UPDATE = (
    "UPDATE submissions SET status = {p}, provider_status = {p}, output_url = {p},"
    " error = NULL, provider_updated_at = {p}, updated_at = {p} WHERE job_id = {p}"
)
if _SQLITE:
    INSERT = _INSERT.format(", ".join("?" * 12))
    UPDATE = _UPDATE.format(p="?")
else:
    INSERT = _INSERT.format(", ".join(["%s"] * 12))
    UPDATE = _UPDATE.format(p="%s")


def _signed(body: bytes) -> str | None:
    """Return the delivery id when the Standard Webhooks signature holds."""
    msg_id = request.headers.get("webhook-id", "")
    stamp = request.headers.get("webhook-timestamp", "")
    if not msg_id or not stamp.isdigit() or abs(time.time() - int(stamp)) > _TOLERANCE:
        return None
    digest = hmac.new(_WEBHOOK_KEY, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256)
    expected = base64.b64encode(digest.digest()).decode()
    for part in request.headers.get("webhook-signature", "").split():
        version, _, signature = part.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return msg_id
    return None


def _stamp(value: datetime) -> Any:
    # What SQLAlchemy stores for a DateTime on SQLite: naive UTC text.
    return value.replace(tzinfo=None).isoformat(" ") if _SQLITE else value


@app.post("/webhooks/ittybit")
@app.post("/webhooks/ittybit/<token>")
def webhook(token: str | None = None) -> tuple[str, int]:
    body = request.get_data(cache=False)
    delivery_id = _signed(body)
    if delivery_id is None:
        return "", 401
    claimed_user = None
    if token is not None:
        try:
            claimed_user = _TOKENS.loads(token)["u"]
        except (BadSignature, KeyError, TypeError):
            return "", 401
    payload = json.loads(body)
    is_event = payload.get("object") == "event"
    job = payload["data"] if is_event else payload
    # The service's key: the event id of an envelope, else the webhook-id (receiver/store/inbox.py).
    key = f"evt:{payload['id']}" if is_event else f"wh:{delivery_id}"
    metadata = job.get("metadata") or {}
    now = datetime.now(UTC)
    updated = datetime.fromtimestamp(job["updated_at"], UTC)
    headers = {name: request.headers[name] for name in _HEADERS if name in request.headers}
    output = job.get("output")
    output_url = output.get("url") if isinstance(output, dict) else output
    conn = worker_connection(_URL)
    if _SQLITE:
        conn.execute("BEGIN IMMEDIATE")
    try:
        inserted = conn.execute(
            INSERT,
            (
                key,
                _stamp(now),
                "url" if token else "endpoint",
                delivery_id,
                job["id"],
                metadata.get("submission_id"),
                job["status"],
                body.decode(),
                json.dumps(headers),
                "applied",
                None,
                claimed_user,
            ),
        ).fetchone()
        if inserted is not None:
            conn.execute(
                UPDATE,
                (
                    job["status"],
                    job["status"],
                    output_url,
                    _stamp(updated),
                    _stamp(now),
                    job["id"],
                ),
            )
    except BaseException:
        conn.rollback() if not _SQLITE else conn.execute("ROLLBACK")
        raise
    conn.commit() if not _SQLITE else conn.execute("COMMIT")
    return "", 200


@app.get("/readyz")
def readyz() -> tuple[str, int]:
    return "", 200
