"""The application API, ``/api/v1``: submissions in and results out over HTTP, by API key.

One module per concern: ``keys`` (API keys), ``auth`` (the Bearer check), ``schemas``
(the pydantic models that validate and document), ``spec`` (the OpenAPI document),
``errors`` (one error shape), ``idempotency``, ``pagination`` and ``listing`` (keyset
pages on indexes), ``client`` (the budgeted ittybit client), and the views:
``submissions``, ``notifications`` and ``document``.
"""

from __future__ import annotations

from flask import Flask

from receiver.web.api import document, notifications, submissions
from receiver.web.api.blueprint import bp

__all__ = ["init_app"]

# The view modules add their routes to bp when imported.
_VIEWS = (document, notifications, submissions)


def init_app(app: Flask) -> None:
    """Serve the API under /api/v1."""
    app.register_blueprint(bp)
