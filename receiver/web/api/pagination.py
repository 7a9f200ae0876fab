"""Opaque keyset cursors: where the last page ended, in a form callers need not read."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from receiver.store.models import MAX_ROW_ID
from receiver.web.api.errors import ApiProblem

__all__ = ["decode_cursor", "decode_timeline_cursor", "encode_cursor"]


def encode_cursor(*position: datetime | int) -> str:
    """Return the cursor of a position (its sort key, last value the row id)."""
    values = [value.isoformat() if isinstance(value, datetime) else value for value in position]
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _invalid() -> ApiProblem:
    return ApiProblem(400, "invalid_cursor", "cursor is not one this API gave", field="cursor")


def decode_cursor(cursor: str, *, with_time: bool) -> tuple[datetime | None, int]:
    """Return (time, id) from a cursor of a list sorted by (time, id), or (None, id)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _invalid() from None
    if not isinstance(values, list) or len(values) != (2 if with_time else 1):
        raise _invalid()
    last_id = values[-1]
    if not isinstance(last_id, int) or isinstance(last_id, bool) or not 0 <= last_id <= MAX_ROW_ID:
        raise _invalid()
    if not with_time:
        return None, last_id
    try:
        moment = datetime.fromisoformat(values[0])
    except (TypeError, ValueError):
        raise _invalid() from None
    if moment.tzinfo is None:
        raise _invalid()
    try:
        return moment.astimezone(UTC), last_id
    except OverflowError:  # 9999-12-31T23:59:59-23:00 is after year 9999 in UTC
        raise _invalid() from None


def decode_timeline_cursor(cursor: str, *, kinds: int) -> tuple[datetime, int, int]:
    """Return (time, kind, id) from a cursor of a timeline sorted by (time, kind, id)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _invalid() from None
    if not isinstance(values, list) or len(values) != 3:
        raise _invalid()
    kind = values[1]
    if not isinstance(kind, int) or isinstance(kind, bool) or not 0 <= kind < kinds:
        raise _invalid()
    moment, last_id = decode_cursor(encode_cursor(values[0], values[2]), with_time=True)
    assert moment is not None
    return moment, kind, last_id
