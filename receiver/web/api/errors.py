"""The API's one error shape, ``{"error", "message", "field"?}``, for every failure.

Request validation is spectree's (pydantic models); its failures are answered here in
the same shape as every other error: 400 for a bad parameter, 422 for a bad body, with
the failing field named.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from receiver.observe.logs import note
from receiver.store.engines import database_unavailable

__all__ = [
    "ApiProblem",
    "api_error",
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
    # The body's media type, JSON and shape were checked before (receiver.web.api.bodies).
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
