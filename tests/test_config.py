"""Settings from the environment: defaults, refusals naming the variable, and start-up exits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import DEV_SECRET_KEY, ConfigError, Settings, parse_duration
from tests.helpers import WEBHOOK_SECRET

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PROD = {
    "APP_ENV": "production",
    "SECRET_KEY": "a-production-secret-key-0123",
    "PUBLIC_URL": "https://hooks.example.com",
}


def settings(**env: str) -> Settings:
    return Settings.from_env(env)


def refusal(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    return str(caught.value)


def test_development_defaults(tmp_path: Path) -> None:
    value = Settings.from_env({"APP_ENV": "development"}, instance_path=tmp_path)
    assert value.env == "development"
    assert value.secret_keys == (DEV_SECRET_KEY,)
    assert value.database_url == f"sqlite:///{tmp_path.resolve() / 'jobhooks.db'}"
    assert value.public_url == "http://localhost:8000"
    assert value.webhook_secrets == ()
    assert (value.webhook_tolerance, value.max_body_bytes) == (300, 1024 * 1024)
    assert (value.port, value.web_concurrency) == (8000, 2)


def test_production_settings() -> None:
    value = Settings.from_env(
        {
            **PROD,
            "SECRET_KEY": "newest-key-0123456789, older-key-0123456789",
            "ITTYBIT_WEBHOOK_SECRET": f"{WEBHOOK_SECRET},whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "WEBHOOK_TOLERANCE": "60",
            "MAX_BODY_BYTES": "4096",
            "PORT": "5000",
            "WEB_CONCURRENCY": "4",
        }
    )
    assert value.is_production
    assert value.secret_keys == ("newest-key-0123456789", "older-key-0123456789")
    assert len(value.webhook_secrets) == 2
    assert value.webhook_secrets[0] == b"jobhooks-test-webhook-key-32byte"
    assert (value.webhook_tolerance, value.max_body_bytes, value.port) == (60, 4096, 5000)
    assert value.web_concurrency == 4
    assert value.warnings == ()


def test_app_env_defaults_to_production() -> None:
    assert refusal({}).startswith("SECRET_KEY:")
    assert settings(**{k: v for k, v in PROD.items() if k != "APP_ENV"}).is_production


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"APP_ENV": "staging"}, "APP_ENV"),
        ({**PROD, "SECRET_KEY": ""}, "SECRET_KEY"),
        ({**PROD, "SECRET_KEY": " , "}, "SECRET_KEY"),
        ({**PROD, "SECRET_KEY": DEV_SECRET_KEY}, "SECRET_KEY"),
        ({**PROD, "SECRET_KEY": f"a-good-long-key-0123,{DEV_SECRET_KEY}"}, "SECRET_KEY"),
        ({**PROD, "SECRET_KEY": "short"}, "SECRET_KEY"),
        ({**PROD, "PUBLIC_URL": ""}, "PUBLIC_URL"),
        ({**PROD, "PUBLIC_URL": "hooks.example.com"}, "PUBLIC_URL"),
        ({**PROD, "PUBLIC_URL": "ftp://hooks.example.com"}, "PUBLIC_URL"),
        ({**PROD, "WEBHOOK_TOLERANCE": "five"}, "WEBHOOK_TOLERANCE"),
        ({**PROD, "WEBHOOK_TOLERANCE": "0"}, "WEBHOOK_TOLERANCE"),
        ({**PROD, "WEBHOOK_TOLERANCE": "1.5"}, "WEBHOOK_TOLERANCE"),
        ({**PROD, "ITTYBIT_WEBHOOK_SECRET": "whsec_not*base64"}, "ITTYBIT_WEBHOOK_SECRET"),
        ({**PROD, "ITTYBIT_WEBHOOK_SECRET": "whsec_c2hvcnQ="}, "ITTYBIT_WEBHOOK_SECRET"),
        ({**PROD, "MAX_BODY_BYTES": "-1"}, "MAX_BODY_BYTES"),
        ({**PROD, "PORT": "70000"}, "PORT"),
        ({**PROD, "WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY"),
        ({**PROD, "DATABASE_URL": "mysql://db/x"}, "DATABASE_URL"),
        ({**PROD, "DATABASE_URL": "postgres://user@db:notaport/x"}, "DATABASE_URL"),
        ({**PROD, "DATABASE_URL": "sqlite:relative.db"}, "DATABASE_URL"),
        ({**PROD, "SQLITE_BUSY_TIMEOUT_MS": "soon"}, "SQLITE_BUSY_TIMEOUT_MS"),
        ({**PROD, "STUCK_AFTER": "15 minutes"}, "STUCK_AFTER"),
        ({**PROD, "ITTYBIT_API_URL": "api.ittybit.com"}, "ITTYBIT_API_URL"),
    ],
)
def test_bad_value_names_the_variable(env: dict[str, str], variable: str) -> None:
    assert refusal(env).startswith(f"{variable}: ")


def test_refusals_do_not_echo_secrets() -> None:
    message = refusal({**PROD, "SECRET_KEY": "tiny-secret"})
    assert "tiny-secret" not in message
    message = refusal({**PROD, "DATABASE_URL": "postgres://user:hunter2@db:bad/x"})
    assert "hunter2" not in message


def test_dev_secret_is_fine_outside_production() -> None:
    assert settings(APP_ENV="test", SECRET_KEY="short").secret_keys == ("short",)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db.example.com:5432/app", "postgresql+psycopg://u:p@db.example.com:5432/app"),
        ("postgresql://u@db/app", "postgresql+psycopg://u@db/app"),
        ("postgresql+psycopg://u@db/app", "postgresql+psycopg://u@db/app"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)  # fmt: skip
def test_database_url_forms(given: str, expected: str) -> None:
    assert settings(**PROD, DATABASE_URL=given).database_url == expected


def test_plain_http_public_url_warns_in_production() -> None:
    value = settings(**{**PROD, "PUBLIC_URL": "http://hooks.example.com/"})
    assert value.public_url == "http://hooks.example.com"
    assert len(value.warnings) == 1
    assert value.warnings[0].startswith("PUBLIC_URL uses plain http")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("30s", 30), ("15m", 900), ("2h", 7200), ("7d", 604800), ("250ms", 0.25)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_refuses_words() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


# --- the real entry points, as subprocesses ---------------------------------------------------


def run_entry_point(
    args: list[str], env: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(tmp_path)}
    full_env.update(env)
    return subprocess.run(
        args, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=60, check=False
    )


ENTRY_POINTS = {
    "flask": [str(BIN / "flask"), "--app", "wsgi", "submissions", "show", "x"],
    "gunicorn": [str(BIN / "gunicorn"), "-c", "config/gunicorn.py", "wsgi:app"],
}
DEV = {"APP_ENV": "development"}
BAD_ENVIRONMENTS = {
    "missing-secret": ({"APP_ENV": "production", "PUBLIC_URL": "https://h.example"}, "SECRET_KEY"),
    "bad-tolerance": ({**DEV, "WEBHOOK_TOLERANCE": "soon"}, "WEBHOOK_TOLERANCE"),
    "bad-database": ({**DEV, "DATABASE_URL": "postgres://u@h:port/x"}, "DATABASE_URL"),
    "bad-port": ({**DEV, "PORT": "http"}, "PORT"),
}


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("case", sorted(BAD_ENVIRONMENTS))
def test_entry_point_stops_with_one_line(entry_point: str, case: str, tmp_path: Path) -> None:
    env, variable = BAD_ENVIRONMENTS[case]
    env = {**env, "DATABASE_URL": env.get("DATABASE_URL", f"sqlite:///{tmp_path}/x.db")}
    result = run_entry_point(ENTRY_POINTS[entry_point], env, tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"jobhooks: configuration error: {variable}: ")
    assert result.stdout == ""
