"""``jobhooks admin create|list|delete``: the accounts of the admin view."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from flask.testing import FlaskCliRunner
from sqlalchemy.engine import Engine

from receiver.flows.admin_accounts import authenticate
from receiver.store.models import AdminUser, utcnow

_admins = AdminUser.__table__  # type: ignore[attr-defined]
PASSWORD = "a long enough password"


def test_create_reads_the_password_from_stdin_and_stores_only_a_scrypt_hash(
    runner: FlaskCliRunner, engine: Engine
) -> None:
    result = runner.invoke(
        args=["admin", "create", "Ops@Example.com", "--password-stdin"], input=PASSWORD + "\n"
    )
    assert result.exit_code == 0, result.output
    assert "created admin ops@example.com" in result.output
    with engine.connect() as conn:
        row = conn.execute(sa.select(_admins)).one()
    assert row.email == "ops@example.com"
    assert row.password_hash.startswith("scrypt:")
    assert PASSWORD not in row.password_hash
    assert authenticate(engine, "ops@example.com", PASSWORD, now=utcnow()) is not None


def test_create_prompts_twice_for_the_password(runner: FlaskCliRunner, engine: Engine) -> None:
    result = runner.invoke(
        args=["admin", "create", "ops@example.com"], input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    assert authenticate(engine, "ops@example.com", PASSWORD, now=utcnow()) is not None


def test_create_refuses_a_short_password_a_bad_email_and_a_taken_one(
    runner: FlaskCliRunner, engine: Engine
) -> None:
    def create(email: str, password: str) -> tuple[int, str]:
        result = runner.invoke(
            args=["admin", "create", email, "--password-stdin"], input=password + "\n"
        )
        return result.exit_code, result.output

    assert create("ops@example.com", "short") == (
        1,
        "Error: the password must be at least 12 characters\n",
    )
    assert create("not-an-email", PASSWORD)[0] == 1
    assert create("ops@example.com", PASSWORD)[0] == 0
    assert create("OPS@example.com", PASSWORD) == (
        1,
        "Error: an account for ops@example.com exists already\n",
    )
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(_admins)).scalar_one() == 1


def test_list_and_delete(runner: FlaskCliRunner) -> None:
    assert "no admin accounts" in runner.invoke(args=["admin", "list"]).output
    for email in ("b@example.com", "a@example.com"):
        runner.invoke(args=["admin", "create", email, "--password-stdin"], input=PASSWORD)
    listed = runner.invoke(args=["admin", "list"]).output.splitlines()
    assert [line.split()[0] for line in listed] == ["a@example.com", "b@example.com"]
    as_json = [
        json.loads(line)
        for line in runner.invoke(args=["admin", "list", "--json"]).output.splitlines()
    ]
    assert [entry["email"] for entry in as_json] == ["a@example.com", "b@example.com"]
    assert "password_hash" not in as_json[0] and "session_token" not in as_json[0]

    deleted = runner.invoke(args=["admin", "delete", "A@example.com"])
    assert deleted.exit_code == 0
    assert deleted.output == "deleted admin a@example.com\n"
    again = runner.invoke(args=["admin", "delete", "a@example.com"])
    assert (again.exit_code, again.output) == (1, "Error: no account for a@example.com\n")
    assert [
        line.split()[0] for line in runner.invoke(args=["admin", "list"]).output.splitlines()
    ] == ["b@example.com"]


def _lock_out(engine: Engine, email: str, address: str) -> None:
    from receiver.flows.admin_accounts import LOCKOUT_FAILURES

    for attempt in range(LOCKOUT_FAILURES):
        assert (
            authenticate(engine, email, f"wrong {attempt}", now=utcnow(), client_ip=address) is None
        )
    assert authenticate(engine, email, PASSWORD, now=utcnow(), client_ip=address) is None


def test_unlock_lifts_a_lock_out_at_once(runner: FlaskCliRunner, engine: Engine) -> None:
    runner.invoke(args=["admin", "create", "ops@example.com", "--password-stdin"], input=PASSWORD)
    _lock_out(engine, "ops@example.com", "203.0.113.7")
    assert "locked until" in runner.invoke(args=["admin", "list"]).output
    result = runner.invoke(args=["admin", "unlock", "OPS@example.com"])
    assert (result.exit_code, result.output) == (0, "unlocked admin ops@example.com\n")
    assert "locked until" not in runner.invoke(args=["admin", "list"]).output
    found = authenticate(engine, "ops@example.com", PASSWORD, now=utcnow(), client_ip="203.0.113.7")
    assert found is not None
    missing = runner.invoke(args=["admin", "unlock", "nobody@example.com"])
    assert (missing.exit_code, missing.output) == (1, "Error: no account for nobody@example.com\n")


@pytest.mark.slow
def test_set_password_replaces_it_ends_sessions_and_lifts_the_lock_out(
    runner: FlaskCliRunner, engine: Engine
) -> None:
    runner.invoke(args=["admin", "create", "ops@example.com", "--password-stdin"], input=PASSWORD)
    with engine.connect() as conn:
        old_session = conn.execute(sa.select(_admins.c.session_token)).scalar_one()
    _lock_out(engine, "ops@example.com", "203.0.113.7")
    new = "another long enough password"
    result = runner.invoke(
        args=["admin", "set-password", "ops@example.com", "--password-stdin"], input=new + "\n"
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("set a new password for admin ops@example.com")
    assert authenticate(engine, "ops@example.com", PASSWORD, now=utcnow()) is None
    assert authenticate(engine, "ops@example.com", new, now=utcnow(), client_ip="203.0.113.7")
    with engine.connect() as conn:
        row = conn.execute(sa.select(_admins)).one()
    assert row.session_token != old_session
    assert new not in row.password_hash
    short = runner.invoke(
        args=["admin", "set-password", "ops@example.com", "--password-stdin"], input="short\n"
    )
    assert short.output == "Error: the password must be at least 12 characters\n"
    prompted = runner.invoke(
        args=["admin", "set-password", "ops@example.com"], input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert prompted.exit_code == 0, prompted.output
    assert authenticate(engine, "ops@example.com", PASSWORD, now=utcnow()) is not None
