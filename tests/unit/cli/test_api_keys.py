"""``jobhooks api-keys create|list|revoke``: shown once, stored as a hash, revoked at once."""

from __future__ import annotations

import json

import sqlalchemy as sa
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy.engine import Engine

from receiver.flows.api_keys import KEY_PREFIX, hash_key


def test_create_prints_the_key_once_and_stores_only_its_hash(
    runner: FlaskCliRunner, client: FlaskClient, engine: Engine
) -> None:
    result = runner.invoke(args=["api-keys", "create", "billing"])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith(KEY_PREFIX)
    assert len(key) >= 40
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT name, key_hash FROM api_keys")).one()
    assert tuple(stored) == ("billing", hash_key(key))
    assert key not in json.dumps(list(stored))
    response = client.get("/api/v1/submissions", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200


def test_create_json_and_a_taken_name(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["api-keys", "create", "app", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["name"] == "app"
    assert printed["key"].startswith(KEY_PREFIX)
    taken = runner.invoke(args=["api-keys", "create", "app"])
    assert taken.exit_code == 1
    assert "already named 'app'" in taken.output


def test_list_shows_name_created_and_last_use(runner: FlaskCliRunner, client: FlaskClient) -> None:
    assert "no API keys" in runner.invoke(args=["api-keys", "list"]).stdout
    key = json.loads(runner.invoke(args=["api-keys", "create", "app", "--json"]).stdout)["key"]
    runner.invoke(args=["api-keys", "create", "unused"])
    client.get("/api/v1/submissions", headers={"Authorization": f"Bearer {key}"})
    listed = runner.invoke(args=["api-keys", "list"])
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["name", "created", "last", "used", "revoked"]
    app_line = next(line for line in lines if line.startswith("app "))
    unused_line = next(line for line in lines if line.startswith("unused "))
    assert app_line.split()[-1] == "-" and app_line.count("-") > 4  # used, not revoked
    assert unused_line.split()[-2:] == ["-", "-"]  # never used, not revoked
    as_json = [
        json.loads(line)
        for line in runner.invoke(args=["api-keys", "list", "--json"]).stdout.splitlines()
    ]
    assert [entry["name"] for entry in as_json] == ["app", "unused"]
    assert as_json[0]["last_used_at"] is not None
    assert as_json[1]["last_used_at"] is None
    assert key not in listed.stdout


def test_revoke_ends_a_key_at_once_and_frees_its_name(
    runner: FlaskCliRunner, client: FlaskClient
) -> None:
    key = json.loads(runner.invoke(args=["api-keys", "create", "app", "--json"]).stdout)["key"]
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v1/submissions", headers=headers).status_code == 200
    result = runner.invoke(args=["api-keys", "revoke", "app"])
    assert result.exit_code == 0, result.output
    assert client.get("/api/v1/submissions", headers=headers).status_code == 401
    assert runner.invoke(args=["api-keys", "revoke", "app"]).exit_code == 1
    assert runner.invoke(args=["api-keys", "create", "app"]).exit_code == 0
    assert client.get("/api/v1/submissions", headers=headers).status_code == 401
