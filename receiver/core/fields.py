"""What a submission's id and metadata may be, wherever they come from.

One rule for the API, ``jobhooks submissions add``/``import`` and the records flow, so
that whatever one of them stores the others can serve back.

- A submission id is 1-200 of ``A-Z a-z 0-9 . _ : -``: it appears as is in the API's
  paths (``/api/v1/submissions/<id>``), where ``/``, spaces or ``?`` could not be read
  back.
- Metadata is bounded as payment APIs bound it (Stripe: 50 keys, keys of 40 characters,
  values of 500) and holds strings only, as ittybit's metadata does.
- No text holds a NUL character: PostgreSQL's text cannot store one, and what SQLite would
  keep the other database could not serve back (:func:`nul_field`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MAX_METADATA_KEY",
    "MAX_METADATA_KEYS",
    "MAX_METADATA_VALUE",
    "MAX_SUBMISSION_ID",
    "SUBMISSION_ID_PATTERN",
    "InvalidField",
    "check_metadata",
    "check_submission_id",
    "nul_field",
]

MAX_SUBMISSION_ID = 200
#: The characters a submission id may hold: safe in a URL path, unchanged by quoting.
SUBMISSION_ID_PATTERN = rf"^[A-Za-z0-9._:-]{{1,{MAX_SUBMISSION_ID}}}$"
MAX_METADATA_KEYS = 50
MAX_METADATA_KEY = 40
MAX_METADATA_VALUE = 500

_SUBMISSION_ID = re.compile(SUBMISSION_ID_PATTERN)


class InvalidField(ValueError):
    """A field breaks its rule; ``field`` names it (``metadata.KEY`` for a metadata key)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


def check_submission_id(value: str) -> str:
    """Return ``value`` if it is a submission id the API can serve back, else raise."""
    # fullmatch: "$" alone would let one trailing newline through.
    if _SUBMISSION_ID.fullmatch(value) is None:
        message = (
            f"submission_id must be 1-{MAX_SUBMISSION_ID} characters of"
            " A-Z a-z 0-9 . _ : - ([A-Za-z0-9._:-])"
        )
        raise InvalidField(message, field="submission_id")
    return value


def check_metadata(metadata: Any) -> dict[str, str]:
    """Return ``metadata`` if it is bounded string pairs, else raise naming the key at fault."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        message = "metadata must be an object"
        raise InvalidField(message, field="metadata")
    if len(metadata) > MAX_METADATA_KEYS:
        message = f"metadata may have at most {MAX_METADATA_KEYS} keys, not {len(metadata)}"
        raise InvalidField(message, field="metadata")
    for key, value in metadata.items():
        name = f"metadata.{str(key)[:MAX_METADATA_KEY]}"
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_METADATA_KEY:
            message = f"metadata keys must be 1-{MAX_METADATA_KEY} characters; {name}… is longer"
            if not isinstance(key, str) or not key:
                message = f"metadata keys must be 1-{MAX_METADATA_KEY} characters"
            raise InvalidField(message, field=name)
        if not isinstance(value, str):
            message = f"{name} must be a string"
            raise InvalidField(message, field=name)
        if len(value) > MAX_METADATA_VALUE:
            message = f"{name} must be at most {MAX_METADATA_VALUE} characters"
            raise InvalidField(message, field=name)
    where = nul_field(metadata, "metadata")
    if where is not None:
        message = f"{where} must not contain a NUL character"
        raise InvalidField(message, field=where)
    return dict(metadata)


def nul_field(value: Any, path: str = "") -> str | None:
    """Return where the first text holding a NUL character is in ``value``, else None.

    ``value`` is what JSON gives: objects, arrays, strings and the rest. The place is
    ``path`` and the keys below it, dotted (``metadata.campaign``, ``options.steps.0``); a
    key that holds a NUL itself is reported as the object it is in.
    """
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                return path
            found = nul_field(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_field(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None
