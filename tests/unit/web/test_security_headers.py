"""Headers on every answer: nosniff (JSON answers too), and HSTS when PUBLIC_URL is https."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from receiver import create_app
from receiver.store.engines import get_engine


def answers(client: FlaskClient) -> list[Any]:
    return [
        client.get("/healthz"),
        client.get("/no-such-page"),
        client.post("/webhooks/ittybit", data=b"{}", content_type="application/json"),
        client.get("/api/v1/submissions"),
        client.get("/admin/login"),
    ]


def test_every_answer_says_nosniff_and_https_sites_send_hsts(client: FlaskClient) -> None:
    seen = answers(client)
    assert {response.status_code for response in seen} >= {200, 401, 404}
    for response in seen:
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert seen[0].is_json and seen[1].is_json


def test_a_plain_http_site_sends_no_hsts(app_config: dict[str, Any]) -> None:
    # HSTS over plain http would be ignored by browsers, and lock a developer out of it.
    app = create_app({**app_config, "PUBLIC_URL": "http://localhost:8000"})
    try:
        for response in answers(app.test_client()):
            assert "Strict-Transport-Security" not in response.headers
            assert response.headers["X-Content-Type-Options"] == "nosniff"
    finally:
        get_engine(app).dispose()
