"""The web process's ittybit client: every call ends within ``API_ITTYBIT_BUDGET``."""

from __future__ import annotations

from flask import current_app

from config.settings import Settings
from receiver.ittybit.client import IttybitClient
from receiver.web.api.errors import ApiProblem
from receiver.web.ittybit import budgeted_client, close_budgeted_client

__all__ = ["api_client", "close_api_client", "settings"]

#: Kept under its old name for the tests and the app's teardown.
close_api_client = close_budgeted_client


def settings() -> Settings:
    """Return the current app's settings."""
    value: Settings = current_app.extensions["jobhooks.settings"]
    return value


def api_client() -> IttybitClient:
    """Return this process's budgeted client; 503 when no ittybit API key is set."""
    if not settings().ittybit_api_key:
        message = "ITTYBIT_API_KEY is not set on the web process: it cannot reach ittybit"
        raise ApiProblem(503, "ittybit_not_configured", message)
    return budgeted_client()
