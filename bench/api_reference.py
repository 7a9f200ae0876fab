"""The stack's own limit for the application API: its reads done by hand on the raw driver.

A minimal Flask app under the same gunicorn as the real one, for the three requests of the
API benchmark: one submission, an owner's page of 100, a campaign's page of 100. For each
it does what the real view must: check the Bearer key's hash in the database, run the same
SQL as the real app (``receiver/web/api/listing.py``, same indexes, same plans) through
``sqlite3`` or ``psycopg``, and answer the same JSON: each row as the submission object
(without its webhook URL, as the real one) and the next page's cursor (the service's own
pure helpers make the key's hash, the cursor, and the timestamps' and metadata's values from
the driver's, as the real pages do). No SQLAlchemy, no request validation, no logging, no
metrics. ``tests/tooling/test_bench.py`` checks that its answers are the real app's, byte
for byte once parsed.

Not a product: it trusts its query strings (the benchmark's paths) and knows no errors.
"""

# ruff: noqa: S608  (the SQL is built from this module's constants, never from input)
from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, request

from bench.rawdb import worker_connection
from receiver.flows.api_keys import hash_key
from receiver.store.models import json_reader, utc_text_reader
from receiver.web.api.pagination import encode_cursor

app = Flask(__name__)

_URL = os.environ["DATABASE_URL"]
_SQLITE = _URL.startswith("sqlite")
_P = "?" if _SQLITE else "%s"

_COLUMNS = (
    "id, submission_id, user_id, input_url, job_id, status, provider_status, output_url,"
    " error, meta, is_test, provider_updated_at, created_at, updated_at"
)
_ORDER = " ORDER BY updated_at DESC, id DESC LIMIT 101"
_NOT_TEST = "is_test IS 0" if _SQLITE else "is_test IS false"
_KEY = f"SELECT id FROM api_keys WHERE key_hash = {_P} AND revoked_at IS NULL"
_ONE = f"SELECT {_COLUMNS} FROM submissions WHERE submission_id = {_P}"
_OWNER = f"SELECT {_COLUMNS} FROM submissions WHERE {_NOT_TEST} AND user_id = {_P}{_ORDER}"
_PAIRS = f"SELECT submission_pk FROM submission_meta WHERE key = {_P} AND value = {_P}"
if _SQLITE:
    _MATCHES = f"SELECT id FROM submissions WHERE {_NOT_TEST} AND id IN ({_PAIRS}){_ORDER}"
else:
    _ARRAY = _PAIRS.replace("SELECT submission_pk", "SELECT array_agg(submission_pk)")
    _MATCHES = (
        f"SELECT id FROM submissions WHERE {_NOT_TEST}"
        f" AND id = ANY(CAST(({_ARRAY}) AS INTEGER[])){_ORDER}"
    )
# The matches sorted by (updated_at, id) alone, then the page's rows read whole.
_META = (
    f"SELECT {_COLUMNS} FROM submissions AS page WHERE id IN ({_MATCHES})"
    " ORDER BY updated_at DESC, id DESC"
)


def _moment(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite's naive UTC text
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value.astimezone(UTC)


_stamp = utc_text_reader("sqlite" if _SQLITE else "postgresql")
_document = json_reader("sqlite" if _SQLITE else "postgresql")


def _submission(row: tuple[Any, ...]) -> dict[str, Any]:
    (_, submission_id, user_id, input_url, job_id, status, provider_status, output_url) = row[:8]
    error, meta, is_test, provider_updated_at, created_at, updated_at = row[8:]
    return {
        "submission_id": submission_id,
        "user_id": user_id,
        "input_url": input_url,
        "job_id": job_id,
        "status": status,
        "provider_status": provider_status,
        "output_url": output_url,
        "error": error,
        "metadata": _document(meta),
        "test": bool(is_test),
        "provider_updated_at": _stamp(provider_updated_at),
        "created_at": _stamp(created_at),
        "updated_at": _stamp(updated_at),
    }


def _json(value: Any, status: int = 200) -> Response:
    return Response(json.dumps(value), status=status, mimetype="application/json")


def _authorised(conn: Any) -> bool:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key:
        return False
    return conn.execute(_KEY, (hash_key(key.strip()),)).fetchone() is not None


@app.get("/api/v1/submissions/<submission_id>")
def one(submission_id: str) -> Response:
    conn = worker_connection(_URL, autocommit=True)
    if not _authorised(conn):
        return _json({"error": "unauthorized"}, 401)
    row = conn.execute(_ONE, (submission_id,)).fetchone()
    if row is None:
        return _json({"error": "not_found"}, 404)
    return _json(_submission(row))


@app.get("/api/v1/submissions")
def page() -> Response:
    conn = worker_connection(_URL, autocommit=True)
    if not _authorised(conn):
        return _json({"error": "unauthorized"}, 401)
    campaign = request.args.get("meta.campaign")
    if campaign is None:
        rows = conn.execute(_OWNER, (request.args["user_id"],)).fetchall()
    else:
        rows = conn.execute(_META, ("campaign", campaign)).fetchall()
    following = encode_cursor(_moment(rows[99][13]), rows[99][0]) if len(rows) > 100 else None
    return _json({"data": [_submission(row) for row in rows[:100]], "next_cursor": following})


@app.get("/readyz")
def readyz() -> tuple[str, int]:
    return "", 200
