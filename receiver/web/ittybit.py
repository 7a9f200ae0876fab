"""Asking ittybit from a web request: a slot held, the process's budgeted client, one flow.

The API's ``POST /submissions/<id>/reconcile`` and the admin view's "Ask ittybit now"
both go through :func:`ask_now`, so neither can wait on ittybit without a slot
(``receiver.web.slots``) nor for longer than ``API_ITTYBIT_BUDGET``.
"""

from __future__ import annotations

import threading

from flask import Flask, current_app

from config.settings import Settings
from receiver.flows.outbox import get_outbox
from receiver.flows.polling import JobResult, reconcile_now
from receiver.ittybit.client import IttybitClient
from receiver.store.engines import get_engine
from receiver.store.models import utcnow
from receiver.web.slots import ittybit_slot

__all__ = ["NoSlotFree", "ask_now", "budgeted_client", "close_budgeted_client"]

_EXTENSION = "jobhooks.api_client"
_lock = threading.Lock()


class NoSlotFree(Exception):
    """Every slot for waiting on ittybit is taken: ittybit was not asked."""


def _settings() -> Settings:
    value: Settings = current_app.extensions["jobhooks.settings"]
    return value


def budgeted_client() -> IttybitClient:
    """Return this process's budgeted client, made on first use (after gunicorn's fork).

    The caller checks first that ``ITTYBIT_API_KEY`` is set.
    """
    app = current_app
    client: IttybitClient | None = app.extensions.get(_EXTENSION)
    if client is not None:
        return client
    config = _settings()
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


def close_budgeted_client(app: Flask) -> None:
    """Close the app's client, if one was made (tests, and a process that stops)."""
    client: IttybitClient | None = app.extensions.pop(_EXTENSION, None)
    if client is not None:
        client.close()


def ask_now(submission_id: str, *, source: str) -> tuple[JobResult, str | None] | None:
    """Ask ittybit about one submission's job now, in a slot, and apply the answer.

    None when it has no job yet. Raises :class:`NoSlotFree` (ittybit not asked) when every
    slot is taken, and LookupError for an unknown submission.
    """
    config = _settings()
    client = budgeted_client()
    with ittybit_slot(config) as free:
        if not free:
            raise NoSlotFree
        return reconcile_now(
            get_engine(),
            client,
            submission_id,
            now=utcnow(),
            give_up_after=config.give_up_after,
            outbox=get_outbox(),
            source=source,
        )
