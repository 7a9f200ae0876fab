"""The command line through Flask's CLI runner: exact JSON, exit codes and database state."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskCliRunner
from sqlalchemy import event
from sqlalchemy.engine import Engine

from receiver import create_app
from receiver.core.signing import TokenClaims, verify_webhook_token
from receiver.store.engines import get_engine
from receiver.store.models import Submission
from tests.helpers import OLD_SECRET_KEY, SECRET_KEY

DOCUMENTED_KEYS = {
    "submission_id",
    "user_id",
    "input_url",
    "job_id",
    "status",
    "provider_status",
    "output_url",
    "error",
    "metadata",
    "test",
    "provider_updated_at",
    "created_at",
    "updated_at",
}
PUBLIC_URL = "https://hooks.example.com"


def add_args(submission_id: str = "sub_1", *extra: str) -> list[str]:
    return [
        "submissions",
        "add",
        submission_id,
        "--user-id",
        "user_1",
        "--input",
        f"https://uploads.example.com/{submission_id}.mp4",
        *extra,
    ]


def count(engine: Engine) -> int:
    table = Submission.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def stored(engine: Engine, submission_id: str) -> dict[str, Any] | None:
    table = Submission.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.submission_id == submission_id)).first()
    return None if row is None else dict(row._mapping)


def claims_of(url: str) -> TokenClaims:
    assert url.startswith(f"{PUBLIC_URL}/webhooks/ittybit/")
    return verify_webhook_token([SECRET_KEY, OLD_SECRET_KEY], url.rsplit("/", 1)[1])


# --- submissions add / show -------------------------------------------------------------------


def test_add_prints_the_submission(runner: FlaskCliRunner, engine: Engine) -> None:
    result = runner.invoke(
        args=add_args("sub_1", "--job-id", "job_1", "--meta", "campaign=spring", "--meta", "q=a=b")
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert set(printed) == DOCUMENTED_KEYS
    generated = {"created_at", "updated_at"}
    assert {key: value for key, value in printed.items() if key not in generated} == {
        "submission_id": "sub_1",
        "user_id": "user_1",
        "input_url": "https://uploads.example.com/sub_1.mp4",
        "job_id": "job_1",
        "status": "pending",
        "provider_status": None,
        "output_url": None,
        "error": None,
        "metadata": {"campaign": "spring", "q": "a=b"},
        "test": False,
        "provider_updated_at": None,
    }
    assert datetime.fromisoformat(printed["created_at"]).tzinfo is not None
    url = runner.invoke(args=["webhook-url", "sub_1"]).stdout.strip()
    assert claims_of(url) == TokenClaims("sub_1", "user_1")
    row = stored(engine, "sub_1")
    assert row is not None
    assert (row["user_id"], row["job_id"], row["status"]) == ("user_1", "job_1", "pending")
    assert row["meta"] == {"campaign": "spring", "q": "a=b"}


def test_show_prints_the_same_record(runner: FlaskCliRunner) -> None:
    added = json.loads(runner.invoke(args=add_args("sub_1", "--meta", "k=v")).stdout)
    result = runner.invoke(args=["submissions", "show", "sub_1"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert set(shown) == DOCUMENTED_KEYS
    assert shown == added


def test_add_twice_fails_and_keeps_the_first(runner: FlaskCliRunner, engine: Engine) -> None:
    assert runner.invoke(args=add_args("sub_1")).exit_code == 0
    result = runner.invoke(
        args=["submissions", "add", "sub_1", "--user-id", "user_2", "--input", "https://x/y"]
    )
    assert result.exit_code == 1
    assert "Error: submission 'sub_1' already exists" in result.stderr
    row = stored(engine, "sub_1")
    assert row is not None
    assert row["user_id"] == "user_1"
    assert count(engine) == 1


@pytest.mark.parametrize("meta", ["campaign", "=spring", ""])
def test_add_with_bad_meta(runner: FlaskCliRunner, engine: Engine, meta: str) -> None:
    result = runner.invoke(args=add_args("sub_1", "--meta", meta))
    assert result.exit_code == 2
    assert "--meta expects key=value" in result.stderr
    assert count(engine) == 0


@pytest.mark.parametrize(
    ("submission_id", "user_id", "input_url", "message"),
    [
        ("sub_1", "u", "ftp://x/y", "input_url must be an http(s) URL"),
        ("sub_1", " ", "https://x/y", "user_id is required"),
        ("s" * 201, "u", "https://x/y", "submission_id must be 1-200 characters"),
    ],
)
def test_add_with_bad_values(
    runner: FlaskCliRunner,
    engine: Engine,
    submission_id: str,
    user_id: str,
    input_url: str,
    message: str,
) -> None:
    args = ["submissions", "add", submission_id, "--user-id", user_id, "--input", input_url]
    result = runner.invoke(args=args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert count(engine) == 0


def test_add_without_required_option(runner: FlaskCliRunner, engine: Engine) -> None:
    result = runner.invoke(args=["submissions", "add", "sub_1", "--input", "https://x/y"])
    assert result.exit_code == 2
    assert "--user-id" in result.stderr
    assert count(engine) == 0


def test_show_unknown_id(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["submissions", "show", "nope"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "Error: no submission 'nope'" in result.stderr


# --- webhook-url ------------------------------------------------------------------------------


def test_webhook_url_verifies(runner: FlaskCliRunner) -> None:
    runner.invoke(args=add_args("sub_7"))
    result = runner.invoke(args=["webhook-url", "sub_7"])
    assert result.exit_code == 0, result.output
    url = result.stdout.strip()
    assert "\n" not in url
    assert claims_of(url) == TokenClaims("sub_7", "user_1")
    # Signed with the newest key: dropping the old key later keeps it valid.
    assert verify_webhook_token([SECRET_KEY], url.rsplit("/", 1)[1]).submission_id == "sub_7"


def test_webhook_url_unknown_id(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["webhook-url", "nope"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "no submission 'nope'" in result.stderr


# --- submissions import -----------------------------------------------------------------------


def write_lines(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def record(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "submission_id": f"sub_{n}",
        "user_id": f"user_{n % 50}",
        "input_url": f"https://uploads.example.com/{n}.mp4",
        **extra,
    }


def test_import_thousands_then_rerun_skips(
    runner: FlaskCliRunner, engine: Engine, tmp_path: Path
) -> None:
    records = [record(n) for n in range(5000)]
    records[10] = record(10, job_id="job_10", status="processing", metadata={"campaign": "x"})
    path = write_lines(tmp_path / "subs.jsonl", records)
    result = runner.invoke(args=["submissions", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"read": 5000, "inserted": 5000, "skipped": 0}
    assert count(engine) == 5000
    row = stored(engine, "sub_10")
    assert row is not None
    assert (row["job_id"], row["status"], row["meta"]) == (
        "job_10",
        "processing",
        {"campaign": "x"},
    )
    last = stored(engine, "sub_4999")
    assert last is not None
    assert (last["user_id"], last["status"], last["meta"]) == ("user_49", "pending", {})

    rerun = runner.invoke(args=["submissions", "import", str(path)])
    assert rerun.exit_code == 0, rerun.output
    assert json.loads(rerun.stdout) == {"read": 5000, "inserted": 0, "skipped": 5000}
    assert count(engine) == 5000


def test_import_adds_only_new_rows(runner: FlaskCliRunner, engine: Engine, tmp_path: Path) -> None:
    runner.invoke(args=add_args("sub_1"))
    path = write_lines(tmp_path / "subs.jsonl", [record(1, user_id="someone_else"), record(2)])
    result = runner.invoke(args=["submissions", "import", str(path)])
    assert json.loads(result.stdout) == {"read": 2, "inserted": 1, "skipped": 1}
    existing = stored(engine, "sub_1")
    assert existing is not None
    assert existing["user_id"] == "user_1"


def test_import_from_stdin(runner: FlaskCliRunner, engine: Engine) -> None:
    text = "\n".join(json.dumps(record(n)) for n in range(3)) + "\n\n"
    result = runner.invoke(args=["submissions", "import", "-"], input=text)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"read": 3, "inserted": 3, "skipped": 0}
    assert count(engine) == 3


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "line 2501: not JSON"),
        ("[1, 2]", "line 2501: expected a JSON object"),
        (json.dumps({"submission_id": "x", "user_id": "u"}), "line 2501: input_url is required"),
        (json.dumps(record(9999, status="done")), "line 2501: status must be one of"),
        (json.dumps(record(9999, colour="red")), "line 2501: unknown keys: colour"),
        (json.dumps(record(9999, metadata=[1])), "line 2501: metadata must be an object"),
        (json.dumps(record(7)), "line 2501: submission_id 'sub_7' repeats"),
    ],
)
def test_import_with_a_bad_line_imports_nothing(
    runner: FlaskCliRunner, engine: Engine, tmp_path: Path, bad_line: str, message: str
) -> None:
    lines = [json.dumps(record(n)) for n in range(5000)]
    lines.insert(2500, bad_line)
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = runner.invoke(args=["submissions", "import", str(path)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert message in result.stderr
    assert "nothing was imported" in result.stderr
    assert "Traceback" not in result.output
    assert count(engine) == 0


def test_import_that_fails_in_the_database_half_way_imports_nothing(
    runner: FlaskCliRunner, engine: Engine, tmp_path: Path
) -> None:
    """The database, not the file, fails late: on SQLite at the third batch of rows, on
    PostgreSQL when the copied rows move from the staging table. Nothing may stay."""
    path = write_lines(tmp_path / "subs.jsonl", [record(n) for n in range(250)])
    fail_at = 1 if engine.dialect.name == "postgresql" else 3
    inserts: list[str] = []

    def fail_late(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO SUBMISSIONS"):
            inserts.append(statement)
            if len(inserts) == fail_at:
                raise sa.exc.OperationalError(statement, params, Exception("disk I/O error"))

    event.listen(engine, "before_cursor_execute", fail_late)
    try:
        result = runner.invoke(args=["submissions", "import", str(path), "--batch", "100"])
    finally:
        event.remove(engine, "before_cursor_execute", fail_late)
    assert len(inserts) == fail_at
    assert result.exit_code == 1
    assert "database error" in result.stderr
    assert count(engine) == 0
    rerun = runner.invoke(args=["submissions", "import", str(path)])
    assert json.loads(rerun.stdout) == {"read": 250, "inserted": 250, "skipped": 0}


def test_import_missing_file(runner: FlaskCliRunner, engine: Engine, tmp_path: Path) -> None:
    result = runner.invoke(args=["submissions", "import", str(tmp_path / "absent.jsonl")])
    assert result.exit_code == 2
    assert "No such file or directory" in result.stderr
    assert count(engine) == 0


# --- db upgrade -------------------------------------------------------------------------------


def test_db_upgrade_is_repeatable(runner: FlaskCliRunner, engine: Engine) -> None:
    for _ in range(2):
        result = runner.invoke(args=["db", "upgrade"])
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == "database upgraded to head"
    assert count(engine) == 0


def test_commands_on_an_unmigrated_database_fail_clearly(
    app_config: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("an empty database is simplest as a new SQLite file")
    app = create_app({**app_config, "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"})
    try:
        result = app.test_cli_runner().invoke(args=["submissions", "show", "sub_1"])
        assert result.exit_code == 1
        assert "database error" in result.stderr
        assert "db upgrade" in result.stderr
        assert "Traceback" not in result.output

        upgraded = app.test_cli_runner().invoke(args=["db", "upgrade"])
        assert upgraded.exit_code == 0, upgraded.output
        again = app.test_cli_runner().invoke(args=["submissions", "show", "sub_1"])
        assert "no submission 'sub_1'" in again.stderr
    finally:
        get_engine(app).dispose()
