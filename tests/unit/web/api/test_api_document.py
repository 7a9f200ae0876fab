"""The OpenAPI document: generated from the models, valid OpenAPI 3.1, every route in it."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from receiver import create_app
from receiver.store.engines import get_engine
from tests.api_helpers import bearer


def document(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/v1/openapi.json")  # no key needed
    assert response.status_code == 200
    payload: dict[str, Any] = response.get_json()
    return payload


def test_the_document_is_valid_openapi_3_1(client: FlaskClient) -> None:
    spec = document(client)
    assert spec["openapi"] == "3.1.0"
    # Raises on any violation of the 3.1 specification (schemas, parameters, references).
    validate(spec, cls=OpenAPIV31SpecValidator)


def test_every_api_route_and_method_is_described(app: Flask, client: FlaskClient) -> None:
    spec = document(client)
    routes = {
        # Flask's <int:name> is OpenAPI's {name}.
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/")
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    described = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert described == routes
    assert len(routes) == 15  # 9, and the six of /endpoints


def test_errors_keys_and_parameters_are_described(client: FlaskClient) -> None:
    spec = document(client)
    error = spec["components"]["schemas"]["ErrorBody"]
    assert error["required"] == ["error", "message"]
    assert set(error["properties"]) == {"error", "message", "field"}
    assert spec["components"]["securitySchemes"]["api_key"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (jh_…).",
    }
    assert spec["security"] == [{"api_key": []}]
    assert spec["paths"]["/api/v1/openapi.json"]["get"]["security"] == []
    create = spec["paths"]["/api/v1/submissions"]["post"]
    assert {"200", "201", "202", "409", "422"} <= set(create["responses"])
    assert [p["name"] for p in create["parameters"]] == ["Idempotency-Key"]
    listing = spec["paths"]["/api/v1/submissions"]["get"]
    names = {parameter["name"]: parameter for parameter in listing["parameters"]}
    assert set(names) == {"status", "user_id", "updated_after", "limit", "cursor"}
    assert names["limit"]["schema"]["maximum"] == 500
    assert "meta.KEY=VALUE" in listing["description"]
    reconcile = spec["paths"]["/api/v1/submissions/{submission_id}/reconcile"]["post"]
    assert {"502", "504"} <= set(reconcile["responses"])


def test_a_notifications_attempts_are_described(client: FlaskClient) -> None:
    spec = document(client)
    attempts = spec["paths"]["/api/v1/notifications/{notification_id}/attempts"]["get"]
    assert set(attempts["responses"]) == {"200", "400", "401", "404", "414", "503"}
    names = {parameter["name"]: parameter for parameter in attempts["parameters"]}
    assert set(names) == {"notification_id", "limit", "cursor"}
    # A row id: 64-bit, as Flask's int converter takes it (spectree alone would say int32).
    row_id = {"type": "integer", "format": "int64", "minimum": 0}
    assert names["notification_id"]["schema"] == row_id
    assert "oldest first" in attempts["summary"]
    shape = spec["components"]["schemas"]["Attempt"]["properties"]
    assert set(shape) == {
        "id",
        "attempted_at",
        "endpoint_id",
        "status_code",
        "error",
        "seconds",
        "response",
    }


def test_the_document_comes_from_the_validating_models(client: FlaskClient) -> None:
    from receiver.web.api.schemas import CreateSubmissionBody

    spec = document(client)
    generated = CreateSubmissionBody.model_json_schema()
    assert (
        spec["components"]["schemas"]["CreateSubmissionBody"]["properties"]
        == (generated["properties"])
    )


def test_answers_are_held_to_the_document_except_in_production(
    app_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Tests and development refuse an answer the document does not describe; production
    sends what the view made (checking cost a tenth of a page), and still checks requests."""
    from receiver.web.api import submissions

    def unheard_of(_conn: Any, submission_id: str) -> dict[str, Any]:
        return {"submission_id": submission_id, "status": "unheard-of"}

    monkeypatch.setattr(submissions, "get_submission_object", unheard_of)
    answers = {}
    for env in ("test", "development", "production"):
        app = create_app({**app_config, "APP_ENV": env})
        try:
            client = app.test_client()
            headers = bearer(app, name=env)
            with caplog.at_level(logging.ERROR):
                answer = client.get("/api/v1/submissions/sub_1", headers=headers)
            refused = client.get("/api/v1/submissions?limit=0", headers=headers)
            answers[env] = (answer.status_code, answer.get_json(), refused.status_code)
        finally:
            get_engine(app).dispose()
    refusal = {"error": "internal_error", "message": "the server could not answer this request"}
    sent = {"submission_id": "sub_1", "status": "unheard-of"}
    assert answers == {
        "test": (500, refusal, 400),
        "development": (500, refusal, 400),
        "production": (200, sent, 400),
    }
    said = [r.getMessage() for r in caplog.records if r.name == "receiver.web.api.errors"]
    assert len(said) == 2
    assert all(message.startswith("answer does not fit the OpenAPI document") for message in said)
