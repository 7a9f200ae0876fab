"""Asking ittybit from a web request: a slot held, the process's budgeted client, one flow.

The API's ``POST /submissions/<id>/reconcile`` and the admin view's "Ask ittybit now"
both go through :func:`ask_now`, so neither can wait on ittybit without a slot
(``receiver.web.slots``) nor for longer than ``API_ITTYBIT_BUDGET``. The flow itself,
``receiver.flows.polling.ask_ittybit_now``, is the one ``reconcile --submission`` uses too.
"""

from __future__ import annotations

import shlex
import threading

from flask import Flask, current_app
from sqlmodel import Session

from config.settings import Settings
from receiver.flows.outbox import get_outbox
from receiver.flows.polling import JobResult, NoRealJob, NoSlotFree, ask_ittybit_now
from receiver.flows.records import get_submission
from receiver.ittybit.client import IttybitClient
from receiver.store.engines import get_engine, get_read_engine
from receiver.store.models import Status, utcnow
from receiver.web.slots import ittybit_slot

__all__ = [
    "NoRealJob",
    "NoSlotFree",
    "ask_now",
    "budgeted_client",
    "close_budgeted_client",
    "no_job_advice",
]

_EXTENSION = "jobhooks.api_client"
_lock = threading.Lock()


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
    slot is taken, LookupError for an unknown submission and :class:`NoRealJob` for a test
    one.
    """
    config = _settings()
    asked = ask_ittybit_now(
        get_engine(),
        budgeted_client(),
        submission_id,
        guard=ittybit_slot(config),
        source=source,
        now=utcnow(),
        give_up_after=config.give_up_after,
        outbox=get_outbox(),
    )
    return None if asked is None else (asked.result, asked.detail)


def no_job_advice(submission_id: str) -> str:
    """Say why a submission :func:`ask_now` found without a job has none, and what to do.

    Only ``submit`` and the API's create make a job (the worker too, for one they asked
    for); registering (``PUT``), ``submissions add`` and ``import`` do not, and cannot give
    an existing submission a job id: a job made elsewhere is attached by its first webhook
    or listed event, whose metadata names the submission.
    """
    with Session(get_read_engine()) as session:
        submission = get_submission(session, submission_id)
    if submission is None or submission.job_id is not None:
        return "it had no ittybit job a moment ago; ask again"
    if submission.status != Status.PENDING:
        return f"it is {submission.status}, so there is nothing to ask ittybit"
    if submission.job_requested_at is not None:
        return (
            "its job is asked for and not made yet: the worker creates it at its next pass "
            "(or run `jobhooks reconcile`); ask again after that"
        )
    command = shlex.join(
        ["jobhooks", "submit", "--submission-id", submission_id, "--user-id", submission.user_id]
    )
    return (
        "no job was asked for (it was added or registered without one"
        + (", or ittybit refused it: see its error" if submission.error else "")
        + f"). Create its job with `{command} --input URL`, or POST /api/v1/submissions "
        "with the same submission_id, user_id and input_url; a job your application made "
        "itself is attached by its first webhook, whose metadata names the submission "
        "(submission_id)"
    )
