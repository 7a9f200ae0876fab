"""JSON request bodies: read strictly, before spectree's model sees them.

Each bad body gets its own 4xx here, so the model (and the database) only ever sees an
object: 415 for a form or any body not sent as ``application/json`` (curl's ``-d``; spectree
would hand the view no body at all); 400 for what is not strict JSON, read by the webhook
path's own parser (``NaN``, ``Infinity``, ``1e400``, a key given twice); 422 naming every
missing field for ``null``, an empty object or any other value that is not an object.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Response, request
from pydantic import BaseModel

from receiver.core.jobstate import InvalidPayload, parse_json
from receiver.web.api.errors import ApiProblem

__all__ = ["json_body"]

_View = Callable[..., Response]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "a number"


def _read_object(required: list[str]) -> dict[str, Any]:
    """Return the request's body as an object holding ``required``, or raise ApiProblem."""
    data = request.get_data(cache=True)
    if (data or request.content_type) and request.mimetype != "application/json":
        raise ApiProblem(415, "unsupported_media_type", "Content-Type must be application/json")
    try:
        value = parse_json(data) if data else {}
    except InvalidPayload as exc:
        raise ApiProblem(400, "invalid_json", str(exc)) from None
    wanted = ", ".join(required)
    if not isinstance(value, dict):
        message = f"the body is {_kind(value)}; expected an object with {wanted}"
        raise ApiProblem(422, "validation_error", message)
    missing = [name for name in required if name not in value]
    if missing:
        message = f"missing required fields: {', '.join(missing)}"
        raise ApiProblem(422, "validation_error", message, field=missing[0])
    return value


def json_body(model: type[BaseModel]) -> Callable[[_View], _View]:
    """Check the body before the view's spectree validation does (put it above that).

    ``functools.wraps`` keeps the view's spectree operation in the document: spectree
    follows ``__wrapped__``.
    """
    required = [name for name, field in model.model_fields.items() if field.is_required()]

    def decorate(view: _View) -> _View:
        @functools.wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Response:
            _read_object(required)
            return view(*args, **kwargs)

        return checked

    return decorate
