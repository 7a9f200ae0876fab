"""``/api/v1/openapi.json``: the OpenAPI 3.1 document, generated, served without a key."""

from __future__ import annotations

import functools
from typing import Any

from flask import Response, jsonify
from spectree import Response as Documented

from receiver.web.api.blueprint import bp
from receiver.web.api.spec import complete_document, spec

__all__ = ["openapi_document"]


@functools.cache
def _document() -> dict[str, Any]:
    # Built once, on first use, as spectree's own is.
    return complete_document(spec.spec)


@bp.get("/openapi.json")
@spec.validate(
    resp=Documented("HTTP_200"), security={}, validation_error_status=400, tags=["document"]
)
def openapi_document() -> Response:
    """Return this API's OpenAPI 3.1 document (no key needed)."""
    return jsonify(_document())
