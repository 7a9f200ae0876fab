"""Shared by the API's tests: keys, the stand-in as the app's ittybit, request helpers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import Engine

from devtools.standin import DEFAULT_API_KEY, Standin
from receiver import create_app
from receiver.flows.api_keys import create_key
from receiver.store.engines import get_engine
from receiver.store.models import Submission, SubmissionMeta, utcnow
from receiver.web.api.client import close_api_client

_submissions = Submission.__table__  # type: ignore[attr-defined]
_meta = SubmissionMeta.__table__  # type: ignore[attr-defined]

INPUT = "https://uploads.example.com/sub_1.mp4"


def bearer(app: Flask, name: str = "application") -> dict[str, str]:
    """Make an API key and return the header that sends it."""
    key = create_key(get_engine(app), name, now=utcnow())
    return {"Authorization": f"Bearer {key}"}


def use_standin(app_config: dict[str, Any], standin: Standin) -> None:
    """Point the app at the stand-in; set before ``app`` is built."""
    app_config["ITTYBIT_API_URL"] = standin.url
    app_config["ITTYBIT_API_KEY"] = DEFAULT_API_KEY
    # The stand-in delivers to the webhook URL: keep it on this machine, never a real host.
    app_config["PUBLIC_URL"] = "http://127.0.0.1:9"


def standin_job(standin: Standin, job_id: str) -> dict[str, Any]:
    """Return a job as the stand-in's API shows it to its owner (webhook URL included)."""
    response = httpx.get(
        f"{standin.url}/jobs/{job_id}",
        headers={"Authorization": f"Bearer {DEFAULT_API_KEY}"},
        timeout=5,
    )
    response.raise_for_status()
    job: dict[str, Any] = response.json()
    return job


def created_jobs(standin: Standin) -> int:
    """Return how many jobs the stand-in made."""
    return standin.stats().jobs


def body(submission_id: str = "sub_1", **extra: Any) -> dict[str, Any]:
    """Return a create body for one submission."""
    return {"submission_id": submission_id, "user_id": "user_1", "input_url": INPUT, **extra}


def stored(engine: Engine, submission_id: str) -> dict[str, Any]:
    """Return a submission's row."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(_submissions).where(_submissions.c.submission_id == submission_id)
        ).one()
    return dict(row._mapping)


def meta_pairs(engine: Engine) -> set[tuple[str, str, str]]:
    """Return the metadata pairs the triggers keep, as (submission id, key, value)."""
    with engine.connect() as conn:
        result = conn.execute(
            sa.select(_submissions.c.submission_id, _meta.c.key, _meta.c.value).join(
                _submissions, _submissions.c.id == _meta.c.submission_pk
            )
        )
        return {(row[0], row[1], row[2]) for row in result}


@contextmanager
def built(config: Mapping[str, Any]) -> Iterator[Flask]:
    """Build another app from ``config`` for a ``with`` block, and close what it opened."""
    app = create_app(config)
    try:
        yield app
    finally:
        close_api_client(app)
        get_engine(app).dispose()
