"""``/api/v1/notifications``: the outbox as the application reads it, a page at a time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Response, jsonify, request
from spectree import Response as Documented

from receiver.web.api.auth import read_connection
from receiver.web.api.blueprint import bp
from receiver.web.api.listing import list_notifications_page, public_endpoint
from receiver.web.api.pagination import decode_cursor, encode_cursor
from receiver.web.api.schemas import ErrorBody, NotificationList, NotificationsQuery
from receiver.web.api.spec import spec

__all__ = ["list_notifications_view"]


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
