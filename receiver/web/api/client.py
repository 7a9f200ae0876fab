"""The web process's ittybit client: every call ends within ``API_ITTYBIT_BUDGET``."""

from __future__ import annotations

import threading

from flask import Flask, current_app

from config.settings import Settings
from receiver.ittybit.client import IttybitClient
from receiver.web.api.errors import ApiProblem

__all__ = ["api_client", "close_api_client", "settings"]

_EXTENSION = "jobhooks.api_client"
_lock = threading.Lock()


def settings() -> Settings:
    """Return the current app's settings."""
    value: Settings = current_app.extensions["jobhooks.settings"]
    return value


def api_client() -> IttybitClient:
    """Return this process's budgeted client, made on first use (after gunicorn's fork)."""
    app = current_app
    client: IttybitClient | None = app.extensions.get(_EXTENSION)
    if client is not None:
        return client
    config = settings()
    if not config.ittybit_api_key:
        message = "ITTYBIT_API_KEY is not set on the web process: it cannot reach ittybit"
        raise ApiProblem(503, "ittybit_not_configured", message)
    with _lock:
        client = app.extensions.get(_EXTENSION)
        if client is None:
            # The sync workers answer ittybit's webhooks too: no call may hold one longer
            # than the budget, retries and waits included. Anything longer is the worker's.
            client = app.extensions[_EXTENSION] = IttybitClient(
                base_url=config.ittybit_api_url,
                api_key=config.ittybit_api_key,
                timeout=config.ittybit_timeout,
                max_connections=4,
                budget=config.api_ittybit_budget,
            )
    return client


def close_api_client(app: Flask) -> None:
    """Close the app's client, if one was made (tests, and a process that stops)."""
    client: IttybitClient | None = app.extensions.pop(_EXTENSION, None)
    if client is not None:
        client.close()
