"""What a submission's id may be, wherever it comes from.

One rule for the API, ``jobhooks submissions add``/``import`` and the records flow, so
that whatever one of them stores the others can serve back.

- A submission id is 1-200 of ``A-Z a-z 0-9 . _ : -``: it appears as is in the API's
  paths (``/api/v1/submissions/<id>``), where ``/``, spaces or ``?`` could not be read
  back.
"""

from __future__ import annotations

import re

__all__ = ["MAX_SUBMISSION_ID", "SUBMISSION_ID_PATTERN", "InvalidField", "check_submission_id"]

MAX_SUBMISSION_ID = 200
#: The characters a submission id may hold: safe in a URL path, unchanged by quoting.
SUBMISSION_ID_PATTERN = rf"^[A-Za-z0-9._:-]{{1,{MAX_SUBMISSION_ID}}}$"

_SUBMISSION_ID = re.compile(SUBMISSION_ID_PATTERN)


class InvalidField(ValueError):
    """A field breaks its rule; ``field`` names it."""

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
