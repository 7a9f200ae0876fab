"""The webhook endpoints resource (``/webhooks/endpoints``), as ittybit serves it since 2025-12.

Each endpoint has a ``whsec_`` secret of its own and a status (``active``, ``paused``,
``disabled``); the deliverer sends every event to each active endpoint, signed with its
secret. Topics are kept and shown but not used to filter: the stand-in's events are the
jobs API's ``job.*`` kinds, which no ``task.*`` topic would let through.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from typing import Any

__all__ = ["ENDPOINT_STATUSES", "EndpointRegistry"]

ENDPOINT_STATUSES = ("active", "paused", "disabled")


class EndpointRegistry:
    """The project's webhook endpoints, by id, in creation order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, dict[str, Any]] = {}

    def create(self, url: str, topics: list[str]) -> dict[str, Any]:
        """Register an endpoint and return it with its secret."""
        endpoint_id = "ep_" + secrets.token_hex(8)
        endpoint: dict[str, Any] = {
            "id": endpoint_id,
            "object": "webhook_endpoint",
            "url": url,
            "topics": list(topics),
            "status": "active",
            "verified": False,
            "secret": "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode(),
            "created_at": int(time.time()),
        }
        with self._lock:
            self._items[endpoint_id] = endpoint
        return dict(endpoint)

    def listing(self) -> list[dict[str, Any]]:
        """Return every endpoint, without its secret."""
        with self._lock:
            return [_public(item) for item in self._items.values()]

    def get(self, endpoint_id: str) -> dict[str, Any] | None:
        """Return one endpoint without its secret, or None."""
        with self._lock:
            item = self._items.get(endpoint_id)
            return _public(item) if item else None

    def update(self, endpoint_id: str, changes: dict[str, Any]) -> dict[str, Any] | None:
        """Apply ``url``, ``topics`` and ``status`` changes; return the endpoint, or None."""
        with self._lock:
            item = self._items.get(endpoint_id)
            if item is None:
                return None
            for name in ("url", "topics", "status"):
                if name in changes:
                    item[name] = changes[name]
            return _public(item)

    def delete(self, endpoint_id: str) -> bool:
        """Remove an endpoint; False when there was none."""
        with self._lock:
            return self._items.pop(endpoint_id, None) is not None

    def active(self) -> list[tuple[str, str]]:
        """Return ``(url, secret)`` of every active endpoint."""
        with self._lock:
            return [
                (item["url"], item["secret"])
                for item in self._items.values()
                if item["status"] == "active"
            ]


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if key != "secret"}
