"""``/api/v1/notifications`` and ``/api/v1/endpoints``: the outbox and where it goes.

The notifications as the application reads them, a page at a time, and each one's
delivery attempts (the endpoint's answer only ever as a JSON string); the endpoints as
``jobhooks endpoints`` has them (their secret is answered only when made and rotated).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Response, jsonify, request
from spectree import Response as Documented

from receiver.flows.endpoints import (
    EndpointError,
    add_endpoint,
    endpoint_json,
    get_endpoint,
    list_endpoints,
    remove_endpoint,
    rotate_secret,
    update_endpoint,
)
from receiver.flows.outbox import notification_exists
from receiver.store.engines import get_engine
from receiver.store.models import utcnow
from receiver.web.api.auth import read_connection
from receiver.web.api.blueprint import bp
from receiver.web.api.client import settings
from receiver.web.api.errors import api_error, json_body
from receiver.web.api.listing import list_attempts_page, list_notifications_page, public_endpoint
from receiver.web.api.pagination import decode_cursor, encode_cursor
from receiver.web.api.schemas import (
    AttemptList,
    AttemptsQuery,
    CreateEndpointBody,
    EndpointBody,
    EndpointList,
    EndpointWithSecret,
    ErrorBody,
    NotificationList,
    NotificationsQuery,
    UpdateEndpointBody,
)
from receiver.web.api.spec import spec

__all__ = [
    "create_endpoint_view",
    "delete_endpoint_view",
    "get_endpoint_view",
    "list_attempts_view",
    "list_endpoints_view",
    "list_notifications_view",
    "rotate_endpoint_view",
    "update_endpoint_view",
]


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


@bp.get("/notifications")
@spec.validate(
    query=NotificationsQuery,
    resp=Documented(HTTP_200=NotificationList, HTTP_400=ErrorBody, HTTP_401=ErrorBody),
    validation_error_status=400,
    tags=["notifications"],
)
def list_notifications_view() -> Response:
    """List the notifications owed to the application, newest first, without their bodies.

    `status`: pending (not delivered yet), delivered or dead (given up on).
    """
    query: NotificationsQuery = getattr(request, "context").query  # noqa: B009
    before_id = None
    if query.cursor is not None:
        _, before_id = decode_cursor(query.cursor, with_time=False)
    rows, following = list_notifications_page(
        read_connection(),
        limit=query.limit,
        status=query.status,
        submission_id=query.submission_id,
        before_id=before_id,
    )
    data = []
    for row in rows:
        shown = {name: _plain(value) for name, value in row.items()}
        shown["endpoint"] = public_endpoint(shown["endpoint"])
        data.append(shown)
    return jsonify(data=data, next_cursor=None if following is None else encode_cursor(following))


#: What an attempt shows: every column but its notification's id, which the path names.
_ATTEMPT_FIELDS = (
    "id",
    "attempted_at",
    "endpoint_id",
    "status_code",
    "error",
    "seconds",
    "response",
)


@bp.get("/notifications/<int:notification_id>/attempts")
@spec.validate(
    query=AttemptsQuery,
    resp=Documented(
        HTTP_200=AttemptList, HTTP_400=ErrorBody, HTTP_401=ErrorBody, HTTP_404=ErrorBody
    ),
    validation_error_status=400,
    tags=["notifications"],
    path_parameter_descriptions={"notification_id": "A notification's `id`, as listed."},
)
def list_attempts_view(notification_id: int) -> Response:
    """List one notification's delivery attempts, oldest first, a page at a time.

    Each: when, the HTTP status or the error, how long it took, and the answer's first
    kilobyte as a string. Pass `next_cursor` as `cursor` for the next page.
    """
    query: AttemptsQuery = getattr(request, "context").query  # noqa: B009
    after_id = None
    if query.cursor is not None:
        _, after_id = decode_cursor(query.cursor, with_time=False)
    conn = read_connection()
    if not notification_exists(conn, notification_id):
        return api_error(404, "not_found", f"no notification {notification_id}")
    rows, following = list_attempts_page(
        conn, notification_id, limit=query.limit, after_id=after_id
    )
    data = [{name: _plain(row[name]) for name in _ATTEMPT_FIELDS} for row in rows]
    return jsonify(data=data, next_cursor=None if following is None else encode_cursor(following))


_ENDPOINT_TAGS = ["endpoints"]


def _refused(exc: EndpointError, status: int = 422) -> Response:
    code = "not_found" if status == 404 else "invalid_endpoint"
    return api_error(status, code, str(exc))


def _missing(endpoint_id: str) -> Response:
    return api_error(404, "not_found", f"no endpoint {endpoint_id}")


def _body() -> Any:
    return getattr(request, "context").json  # noqa: B009


@bp.get("/endpoints")
@spec.validate(resp=Documented(HTTP_200=EndpointList, HTTP_401=ErrorBody), tags=_ENDPOINT_TAGS)
def list_endpoints_view() -> Response:
    """List the notification endpoints with their status and health, oldest first."""
    rows = list_endpoints(read_connection())
    return jsonify(data=[endpoint_json(row) for row in rows])


@bp.post("/endpoints")
@json_body(CreateEndpointBody)
@spec.validate(
    json=CreateEndpointBody,
    resp=Documented(
        HTTP_201=EndpointWithSecret,
        HTTP_400=ErrorBody,
        HTTP_401=ErrorBody,
        HTTP_422=(ErrorBody, "A field is missing or invalid (the URL, the event types, …)."),
    ),
    tags=_ENDPOINT_TAGS,
)
def create_endpoint_view() -> Response:
    """Add an endpoint; the answer holds its secret, shown this once."""
    body: CreateEndpointBody = _body()
    try:
        with get_engine().begin() as conn:
            made = add_endpoint(
                conn,
                body.url,
                now=utcnow(),
                event_types=body.event_types,
                secret=body.secret,
                rate=body.rate,
                description=body.description,
            )
    except EndpointError as exc:
        return _refused(exc)
    response = jsonify(made)
    response.status_code = 201
    return response


@bp.get("/endpoints/<endpoint_id>")
@spec.validate(
    resp=Documented(HTTP_200=EndpointBody, HTTP_401=ErrorBody, HTTP_404=ErrorBody),
    tags=_ENDPOINT_TAGS,
)
def get_endpoint_view(endpoint_id: str) -> Response:
    """Return one endpoint (never its secret)."""
    try:
        return jsonify(endpoint_json(get_endpoint(read_connection(), endpoint_id)))
    except EndpointError:
        return _missing(endpoint_id)


@bp.patch("/endpoints/<endpoint_id>")
@json_body(UpdateEndpointBody)
@spec.validate(
    json=UpdateEndpointBody,
    resp=Documented(
        HTTP_200=EndpointBody,
        HTTP_400=ErrorBody,
        HTTP_401=ErrorBody,
        HTTP_404=ErrorBody,
        HTTP_422=(ErrorBody, "A field is invalid (the URL, the event types, the status, …)."),
    ),
    tags=_ENDPOINT_TAGS,
)
def update_endpoint_view(endpoint_id: str) -> Response:
    """Change an endpoint; `status: active` enables it (its waiting notifications resume)."""
    body: UpdateEndpointBody = _body()
    changes = body.model_dump(exclude_unset=True)
    try:
        with get_engine().begin() as conn:
            update_endpoint(
                conn,
                endpoint_id,
                now=utcnow(),
                changes=changes,
                max_age=settings().notify_max_age,
            )
            row = get_endpoint(conn, endpoint_id)
    except EndpointError as exc:
        if str(exc) == f"no endpoint {endpoint_id}":
            return _missing(endpoint_id)
        return _refused(exc)
    return jsonify(endpoint_json(row))


@bp.delete("/endpoints/<endpoint_id>")
@spec.validate(
    resp=Documented(HTTP_204=None, HTTP_401=ErrorBody, HTTP_404=ErrorBody), tags=_ENDPOINT_TAGS
)
def delete_endpoint_view(endpoint_id: str) -> Response:
    """Remove an endpoint; its pending notifications are dropped."""
    try:
        with get_engine().begin() as conn:
            dropped = remove_endpoint(conn, endpoint_id)
    except EndpointError:
        return _missing(endpoint_id)
    response = Response(status=204)
    response.headers["X-Dropped-Notifications"] = str(dropped)
    return response


@bp.post("/endpoints/<endpoint_id>/rotate")
@spec.validate(
    resp=Documented(HTTP_200=EndpointWithSecret, HTTP_401=ErrorBody, HTTP_404=ErrorBody),
    tags=_ENDPOINT_TAGS,
)
def rotate_endpoint_view(endpoint_id: str) -> Response:
    """Give an endpoint a new secret (answered once); the old one signs beside it for 24 h."""
    try:
        with get_engine().begin() as conn:
            secret = rotate_secret(conn, endpoint_id, now=utcnow())
            row = get_endpoint(conn, endpoint_id)
    except EndpointError:
        return _missing(endpoint_id)
    return jsonify({**endpoint_json(row), "secret": secret})
