"""The OpenAPI document: generated from the models, valid OpenAPI 3.1, every route in it."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import OpenAPIV31SpecValidator, validate


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
