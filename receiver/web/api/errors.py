"""The API's one error shape, ``{"error", "message", "field"?}``, for every failure.

Request validation is spectree's (pydantic models); its failures are answered here in
the same shape as every other error: 400 for a bad parameter, 422 for a bad body, with
the failing field named.

A JSON body is read strictly before spectree's model sees it (:func:`json_body`), so
each bad body gets its own 4xx and the model (and the database) only ever sees an
object: 415 for a form or any body not sent as ``application/json`` (curl's ``-d``;
spectree would hand the view no body at all); 400 for what is not strict JSON, read by
the webhook path's own parser (``NaN``, ``Infinity``, ``1e400``, a key given twice); 422
naming every missing field for ``null``, an empty object or any other non-object, and 422
naming the field for text holding a NUL character, which no database column can store.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from receiver.core.fields import nul_field
from receiver.core.jobstate import InvalidPayload, parse_json
from receiver.observe.logs import note
from receiver.store.engines import database_unavailable

__all__ = [
    "ApiProblem",
    "api_error",
    "json_body",
    "register_error_handlers",
    "response_hook",
    "validation_hook",
]

log = logging.getLogger(__name__)


class ApiProblem(Exception):
    """Raised anywhere in a view to answer with one error."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}

    def response(self) -> Response:
        """Return the JSON answer of this problem."""
        return api_error(
            self.status, self.code, self.message, field=self.field, headers=self.headers
        )


def api_error(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Return ``{"error": code, "message": …, "field"?: …}``; the code goes to the log line."""
    note(error=code)
    body: dict[str, Any] = {"error": code, "message": message}
    if field is not None:
        body["field"] = field
    response = jsonify(body)
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


#: What pydantic puts in an error's location for the member of a union it tried.
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none", "datetime"})


def _field(location: tuple[int | str, ...]) -> str | None:
    # pydantic adds the member of a union it tried (`literal[...]`, `str`): not a field.
    parts = [
        str(part)
        for part in location
        if not (
            isinstance(part, str)
            and (part in _TYPE_TAGS or "[" in part or part.startswith("function-"))
        )
    ]
    return ".".join(parts) if parts else None


_OBJECT_EXPECTED = "expected an object"


def validation_hook(req: Any, resp: Any, error: Exception | None, instance: Any, *_: Any) -> None:
    """Answer spectree's validation failures in the API's shape (its ``before`` hook)."""
    if not isinstance(error, ValidationError):
        return
    # The body's media type, JSON and shape were checked before (json_body, below).
    first = error.errors(include_url=False)[0]
    field = _field(first["loc"]) or (first.get("ctx") or {}).get("name")
    text = _OBJECT_EXPECTED if first["type"] in ("dict_type", "model_type") else first["msg"]
    message = f"{field}: {text}" if field else text
    if error.title.endswith("Body"):
        raise ApiProblem(422, "validation_error", message, field=field)
    raise ApiProblem(400, "invalid_parameter", message, field=field)


def response_hook(req: Any, resp: Any, error: Exception | None, instance: Any, *_: Any) -> None:
    """Refuse to send an answer the document does not describe (spectree's ``after`` hook)."""
    if not isinstance(error, ValidationError):
        return
    log.error("answer does not fit the OpenAPI document: %s", error.errors(include_url=False)[:3])
    raise ApiProblem(500, "internal_error", "the server could not answer this request")


def _problem(problem: ApiProblem) -> Response:
    return problem.response()


def _database(exc: SQLAlchemyError) -> Response:
    if not database_unavailable(exc):
        raise exc
    log.warning("database unavailable: %s", type(exc).__name__)
    return api_error(
        503,
        "database_unavailable",
        "the database is unavailable; retry later",
        headers={"Retry-After": "5"},
    )


def register_error_handlers(bp: Blueprint) -> None:
    """Answer ApiProblem and an unavailable database in the API's shape.

    HTTP errors (404, 405, 413…) keep the app's handler (``receiver.web.errors``), whose
    ``{"error", "message"}`` is the same shape.
    """
    bp.register_error_handler(ApiProblem, _problem)
    bp.register_error_handler(SQLAlchemyError, _database)


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
    where = nul_field(value)
    if where is not None:
        message = f"{where or 'a key of the body'} must not contain a NUL character"
        raise ApiProblem(422, "validation_error", message, field=where or None)
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
