"""Flask asks whether a function is a coroutine once per function of the app, not once per
request; a coroutine is still one."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from receiver.web.application import JobhooksFlask
from tests.helpers import encode, job_payload, signed_headers


def test_a_webhook_asks_about_no_function_of_the_app(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flask.app

    asked: list[Any] = []

    def counting(func: Any) -> bool:
        asked.append(func)
        return False

    monkeypatch.setattr(flask.app, "iscoroutinefunction", counting)
    body = encode(job_payload(submission_id="sub_x"))
    response = client.post("/webhooks/ittybit", data=body, headers=signed_headers(body))
    assert response.status_code == 202
    assert client.get("/healthz").status_code == 200
    assert asked == []


def test_the_apps_own_functions_are_handed_back_as_they_are(app: Flask) -> None:
    assert isinstance(app, JobhooksFlask)
    for name, view in app.view_functions.items():
        assert app.ensure_sync(view) is view, name
    for hooks in app.after_request_funcs.values():
        for hook in hooks:
            assert app.ensure_sync(hook) is hook


def test_a_coroutine_is_still_run_as_one() -> None:
    app = JobhooksFlask(__name__)

    async def early() -> None:
        return None

    def plain() -> None:
        return None

    app.before_request(early)
    app.note_plain_functions()
    app.after_request(plain)  # registered later: asked as Flask always does
    assert app.ensure_sync(plain) is plain
    # Flask wraps a coroutine with asgiref (flask[async]); without it, it says so.
    with pytest.raises(RuntimeError, match="async"):
        app.ensure_sync(early)
    unhashable = _Unhashable()
    assert app.ensure_sync(unhashable) is unhashable


class _Unhashable:
    __hash__ = None  # type: ignore[assignment]

    def __call__(self) -> None:
        return None
