"""Settings from the environment: defaults and refusals naming the variable.

The real entry points' start-up exits are in tests/process/test_config_entry_points.py.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from config.settings import DEV_SECRET_KEY, ConfigError, Settings, parse_duration
from tests.helpers import WEBHOOK_SECRET

PROD = {
    "APP_ENV": "production",
    "SECRET_KEY": "a-production-secret-key-0123456789",
    "PUBLIC_URL": "https://hooks.example.com",
    "DATABASE_URL": "postgres://app@db.example.com/app",
    "ITTYBIT_WEBHOOK_SECRET": WEBHOOK_SECRET,
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
            "SECRET_KEY": "newest-key-0123456789abcdefghijkl, older-key-0123456789abcdefghijklm",
            "ITTYBIT_WEBHOOK_SECRET": f"{WEBHOOK_SECRET},whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "WEBHOOK_TOLERANCE": "60",
            "MAX_BODY_BYTES": "4096",
            "PORT": "5000",
            "WEB_CONCURRENCY": "4",
        }
    )
    assert value.env == "production"
    assert value.secret_keys == (
        "newest-key-0123456789abcdefghijkl",
        "older-key-0123456789abcdefghijklm",
    )
    assert len(value.webhook_secrets) == 2
    assert value.webhook_secrets[0] == b"jobhooks-test-webhook-key-32byte"
    assert (value.webhook_tolerance, value.max_body_bytes, value.port) == (60, 4096, 5000)
    assert value.web_concurrency == 4
    assert value.warnings == ()


def test_app_env_defaults_to_production() -> None:
    assert refusal({}).startswith("SECRET_KEY:")
    assert settings(**{k: v for k, v in PROD.items() if k != "APP_ENV"}).env == "production"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"APP_ENV": "staging"}, "APP_ENV"),
        ({**PROD, "SECRET_KEY": ""}, "SECRET_KEY"),
        ({**PROD, "SECRET_KEY": " , "}, "SECRET_KEY"),
        ({**PROD, "SECRET_KEY": DEV_SECRET_KEY}, "SECRET_KEY"),
        (
            {**PROD, "SECRET_KEY": f"{'k' * 32},{DEV_SECRET_KEY}"},
            "SECRET_KEY",
        ),
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


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PORT", "70000", "PORT: must be between 1 and 65535, got 70000"),
        ("MAX_BODY_BYTES", "-1", "MAX_BODY_BYTES: must be >= 256, got -1"),
        ("WEBHOOK_TOLERANCE", "1.5", "WEBHOOK_TOLERANCE: must be a whole number, got '1.5'"),
        (
            "APP_ENV",
            "Staging",
            "APP_ENV: must be one of production, development, test, got 'staging'",
        ),
        ("STUCK_AFTER", "0", "STUCK_AFTER: must be greater than zero, got '0'"),
        (
            "GIVE_UP_AFTER",
            "1 day",
            "GIVE_UP_AFTER: '1 day' is not a duration (use e.g. 30s, 15m, 2h, 7d)",
        ),
        (
            "ITTYBIT_API_URL",
            "api.ittybit.com",
            "ITTYBIT_API_URL: must be an http(s) URL, got 'api.ittybit.com'",
        ),
        (
            "ITTYBIT_WEBHOOK_SECRET",
            "whsec_c2hvcnQ",
            "ITTYBIT_WEBHOOK_SECRET: secret #1 has a key shorter than 16 bytes",
        ),
    ],
)
def test_refusals_say_what_is_wrong_in_one_line(variable: str, value: str, message: str) -> None:
    assert refusal({**PROD, variable: value}) == message


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
    assert settings(**{**PROD, "DATABASE_URL": given}).database_url == expected


def test_plain_http_public_url_warns_in_production() -> None:
    value = settings(**{**PROD, "PUBLIC_URL": "http://hooks.example.com/"})
    assert value.public_url == "http://hooks.example.com"
    assert len(value.warnings) == 1
    assert value.warnings[0].startswith("PUBLIC_URL uses plain http")


def test_missing_secret_key_says_how_to_run_locally() -> None:
    message = refusal({"PUBLIC_URL": "https://hooks.example.com"})
    assert message.startswith("SECRET_KEY: required in production")
    assert "APP_ENV=development" in message


def test_public_url_follows_port_outside_production() -> None:
    assert settings(APP_ENV="development", PORT="5050").public_url == "http://localhost:5050"
    assert settings(APP_ENV="test").public_url == "http://localhost:8000"
    given = settings(APP_ENV="development", PORT="5050", PUBLIC_URL="https://h.example/")
    assert given.public_url == "https://h.example"


def test_settings_read_the_given_mapping_not_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_ENV", "staging")
    monkeypatch.setenv("PORT", "not-a-port")
    monkeypatch.setenv("NOTIFY_URL", "https://app.example.com/hooks")
    value = settings(APP_ENV="test")
    assert (value.env, value.port, value.notify_urls) == ("test", 8000, ())


def test_blank_variables_count_as_unset() -> None:
    value = settings(APP_ENV="test", PORT="  ", STUCK_AFTER="", NOTIFY_EVENTS=" ")
    assert (value.port, value.stuck_after, value.notify_events) == (8000, 900.0, "final")
    assert settings(APP_ENV=" development ", PORT=" 5000 ").port == 5000


def test_defaults_of_the_newer_settings() -> None:
    value = settings(APP_ENV="test")
    assert value.api_ittybit_budget == 3.0
    assert (value.notify_urls, value.notify_secrets) == ((), ())
    assert value.notify_events == "final"
    assert value.notify_max_age == 3 * 86400.0
    assert value.admin_session_idle == 8 * 3600.0


def test_notification_settings() -> None:
    value = settings(
        **PROD,
        NOTIFY_URL="https://app.example.com/hooks/jobhooks, https://backup.example.com/in",
        NOTIFY_SECRET=f"{WEBHOOK_SECRET}, whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        NOTIFY_EVENTS="ALL",
        NOTIFY_MAX_AGE="12h",
        ADMIN_SESSION_IDLE="30m",
        API_ITTYBIT_BUDGET="2500ms",
    )
    assert value.notify_urls == (
        "https://app.example.com/hooks/jobhooks",
        "https://backup.example.com/in",
    )
    assert value.notify_secrets[0] == b"jobhooks-test-webhook-key-32byte"
    assert len(value.notify_secrets) == 2
    assert value.notify_events == "all"
    assert (value.notify_max_age, value.admin_session_idle) == (43200.0, 1800.0)
    assert value.api_ittybit_budget == 2.5
    assert value.warnings == ()


def test_plain_http_notify_url_is_accepted_with_a_warning_in_production() -> None:
    value = settings(
        **PROD,
        NOTIFY_URL="https://app.example.com/a,http://app.internal:8080/b",
        NOTIFY_SECRET=WEBHOOK_SECRET,
    )
    assert value.notify_urls[1] == "http://app.internal:8080/b"
    assert value.warnings == ("NOTIFY_URL #2 uses plain http: notifications travel unencrypted",)
    outside = settings(
        APP_ENV="development", NOTIFY_URL="http://127.0.0.1:9000/in", NOTIFY_SECRET=WEBHOOK_SECRET
    )
    assert outside.warnings == ()


def test_notify_secret_is_required_with_a_notify_url() -> None:
    message = refusal({**PROD, "NOTIFY_URL": "https://app.example.com/hooks"})
    assert message.startswith("NOTIFY_SECRET: required when NOTIFY_URL is set")
    # A secret without a URL to sign for is harmless: notifications are simply off.
    assert settings(**PROD, NOTIFY_SECRET=WEBHOOK_SECRET).notify_urls == ()


@pytest.mark.parametrize(
    "url",
    [
        "ftp://app.example.com/in",
        "app.example.com/in",
        "https://",
        "https://app.example.com:port/in",
        "https://[::1/in",
        "mailto:ops@example.com",
    ],
)
def test_notify_url_must_be_http_and_is_shown_without_its_query(url: str) -> None:
    message = refusal({**PROD, "NOTIFY_URL": f"https://ok.example.com,{url}?key=s3cr3t-query"})
    assert message == f"NOTIFY_URL: URL #2 is not an http(s) URL, got {url + '?…'!r}"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("NOTIFY_SECRET", "whsec_not*base64"),
        ("NOTIFY_SECRET", "whsec_c2hvcnQ"),
        ("NOTIFY_EVENTS", "some"),
        ("NOTIFY_MAX_AGE", "forever"),
        ("NOTIFY_MAX_AGE", "0s"),
        ("ADMIN_SESSION_IDLE", "-1h"),
        ("API_ITTYBIT_BUDGET", "soon"),
        ("API_ITTYBIT_BUDGET", "0"),
        ("API_ITTYBIT_BUDGET", "30s"),
        ("API_ITTYBIT_BUDGET", "1m"),
    ],
)
def test_bad_newer_settings_name_the_variable(variable: str, value: str) -> None:
    env = {**PROD, "NOTIFY_URL": "https://app.example.com/in", "NOTIFY_SECRET": WEBHOOK_SECRET}
    assert refusal({**env, variable: value}).startswith(f"{variable}: ")


def test_api_budget_stays_under_the_web_worker_timeout() -> None:
    assert refusal({**PROD, "API_ITTYBIT_BUDGET": "30s"}) == (
        "API_ITTYBIT_BUDGET: must be under 30s, the web worker's timeout, got '30s'"
    )
    assert settings(**PROD, API_ITTYBIT_BUDGET="29.5s").api_ittybit_budget == 29.5


@pytest.mark.parametrize("variable", ["ITTYBIT_WEBHOOK_SECRET", "NOTIFY_SECRET"])
def test_unpadded_whsec_secrets_are_accepted(variable: str) -> None:
    padded = "whsec_" + base64.b64encode(b"a-key-of-23-bytes-long!").decode()
    assert padded.endswith("=")
    unpadded = padded.rstrip("=")
    env = {**PROD, "NOTIFY_URL": "https://app.example.com/in", "NOTIFY_SECRET": WEBHOOK_SECRET}
    first = settings(**{**env, variable: f"{unpadded},{padded}"})
    keys = first.webhook_secrets if variable == "ITTYBIT_WEBHOOK_SECRET" else first.notify_secrets
    assert keys == (b"a-key-of-23-bytes-long!", b"a-key-of-23-bytes-long!")


def test_secrets_are_kept_out_of_the_settings_repr() -> None:
    value = settings(
        **{**PROD, "DATABASE_URL": "postgres://app:db-password-9@db.example.com/app"},
        ITTYBIT_API_KEY="ittybit-api-key-9",
        METRICS_TOKEN="metrics-token-9",
        NOTIFY_URL="https://app.example.com/in?key=notify-query-9",
        NOTIFY_SECRET=WEBHOOK_SECRET,
    )
    text = repr(value)
    assert "port=8000" in text
    for secret in (
        PROD["SECRET_KEY"],
        "db-password-9",
        "ittybit-api-key-9",
        "metrics-token-9",
        "notify-query-9",
        repr(value.webhook_secrets[0])[2:-1],
    ):
        assert secret not in text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("30s", 30), ("15m", 900), ("2h", 7200), ("7d", 604800), ("250ms", 0.25)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_refuses_words() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_event_list_settings() -> None:
    default = settings(APP_ENV="test")
    assert (default.reconcile_events, default.reconcile_event_pages) == ("on", 20)
    assert default.reconcile_events_since is None
    value = settings(
        APP_ENV="test",
        RECONCILE_EVENTS="OFF",
        RECONCILE_EVENT_PAGES="5",
        RECONCILE_EVENTS_SINCE="2h",
    )
    assert (value.reconcile_events, value.reconcile_event_pages) == ("off", 5)
    assert value.reconcile_events_since == 7200.0
    base = {"APP_ENV": "test"}
    assert refusal({**base, "RECONCILE_EVENTS": "maybe"}).startswith("RECONCILE_EVENTS: must be")
    assert refusal({**base, "RECONCILE_EVENT_PAGES": "0"}).startswith("RECONCILE_EVENT_PAGES:")
    assert refusal({**base, "RECONCILE_EVENTS_SINCE": "0s"}) == (
        "RECONCILE_EVENTS_SINCE: must be greater than zero, got '0s'"
    )


def test_production_refuses_a_secret_key_under_32_characters_without_echoing_it() -> None:
    short = "k" * 31
    message = refusal({**PROD, "SECRET_KEY": f"{'n' * 40},{short}"})
    assert message.startswith("SECRET_KEY: every key must be at least 32 characters")
    assert "key #2 has 31" in message
    assert short not in message
    assert settings(**{**PROD, "SECRET_KEY": "k" * 32}).secret_keys == ("k" * 32,)


def test_production_refuses_to_run_without_database_url(tmp_path: Path) -> None:
    # Outside production a SQLite file in the instance folder is the default; in production
    # it would sit on a dyno's disk and vanish at the next restart.
    env = {key: value for key, value in PROD.items() if key != "DATABASE_URL"}
    assert refusal(env).startswith("DATABASE_URL: required in production")
    dev = Settings.from_env({**env, "APP_ENV": "development"}, instance_path=tmp_path)
    assert dev.database_url.startswith("sqlite:///")
    assert settings(**{**PROD, "DATABASE_URL": "sqlite:////data/jobhooks.db"}).database_url


def test_a_refused_database_url_is_shown_without_its_password() -> None:
    message = refusal({**PROD, "DATABASE_URL": "mysql://app:hunter2@db.example.com/x"})
    assert message == (
        "DATABASE_URL: must be a sqlite:/// or postgres:// URL, got 'mysql://app:***@db.example.com/x'"
    )
    message = refusal({**PROD, "DATABASE_URL": "postgres://app:hunter2@db:notaport/x"})
    assert "'postgres://app:***@db:notaport/x'" in message


def test_web_threads() -> None:
    assert settings(**PROD).web_threads == 4
    assert settings(**{**PROD, "WEB_THREADS": "8"}).web_threads == 8
    assert refusal({**PROD, "WEB_THREADS": "0"}) == "WEB_THREADS: must be between 1 and 64, got 0"


# Every refusal shows the value it refused, so that a typo is seen at once; a secret's never.
# Each setting's parsers in turn: a value for each way it can be refused.
REFUSED_AS_SHOWN = [
    ("APP_ENV", "staging", "'staging'"),
    ("DATABASE_URL", "mysql://db.example.com/app", "'mysql://db.example.com/app'"),
    ("DATABASE_URL", "mysql://app:pw-31@db/x", "'mysql://app:***@db/x'"),
    ("DATABASE_URL", "postgres://app:pw-31@db:port/x", "'postgres://app:***@db:port/x'"),
    ("DATABASE_URL", "postgres://db:port/x?password=pw-31", "'postgres://db:port/x?…'"),
    ("PORT", "http", "'http'"),
    ("PORT", "0", "0"),
    ("PUBLIC_URL", "hooks.example.com", "'hooks.example.com'"),
    ("WEBHOOK_TOLERANCE", "1.5", "'1.5'"),
    ("MAX_BODY_BYTES", "100", "100"),
    ("WEB_CONCURRENCY", "65", "65"),
    ("WEB_THREADS", "65", "65"),
    ("SQLITE_BUSY_TIMEOUT_MS", "soon", "'soon'"),
    ("ITTYBIT_API_URL", "ftp://api.ittybit.com", "'ftp://api.ittybit.com'"),
    ("ITTYBIT_API_VERSION", "latest", "'latest'"),
    ("ITTYBIT_TIMEOUT", "0s", "'0s'"),
    ("API_ITTYBIT_BUDGET", "45s", "'45s'"),
    ("API_ITTYBIT_BUDGET", "1m", "'1m'"),
    ("API_ITTYBIT_BUDGET", "0", "'0'"),
    ("STUCK_AFTER", "a while", "'a while'"),
    ("GIVE_UP_AFTER", "0h", "'0h'"),
    ("RECONCILE_CONCURRENCY", "300", "300"),
    ("RECONCILE_INTERVAL", "1 minute", "'1 minute'"),
    ("RECONCILE_BATCH", "many", "'many'"),
    ("RECONCILE_LEASE", "0ms", "'0ms'"),
    ("RECONCILE_EVENTS", "sometimes", "'sometimes'"),
    ("RECONCILE_EVENT_PAGES", "1001", "1001"),
    ("RECONCILE_EVENTS_SINCE", "yesterday", "'yesterday'"),
    ("WEBHOOK_SILENCE_AFTER", "a bit", "'a bit'"),
    ("WEBHOOK_SILENCE_AFTER", "-5", "'-5'"),
    ("NOTIFY_URL", "app.example.com/in?key=k-31", "'app.example.com/in?…'"),
    ("NOTIFY_URL", "ftp://u:pw-31@app.example.com/in", "'ftp://u:***@app.example.com/in'"),
    ("NOTIFY_EVENTS", "some", "'some'"),
    ("NOTIFY_MAX_AGE", "forever", "'forever'"),
    ("NOTIFY_DISABLE_AFTER", "0d", "'0d'"),
    ("ADMIN_SESSION_IDLE", "0", "'0'"),
    ("ADMIN_SESSION_MAX", "all day", "'all day'"),
    ("LOG_LEVEL", "loud", "'loud'"),
    ("LOG_FORMAT", "xml", "'xml'"),
]
#: Secrets, and values holding one: a refusal names the variable but never shows them.
REFUSED_SECRETLY = [
    ("SECRET_KEY", "tiny-key-31", "tiny-key-31"),
    ("SECRET_KEY", DEV_SECRET_KEY, DEV_SECRET_KEY),
    ("SECRET_KEY", f"a-long-enough-key-31,{DEV_SECRET_KEY}", "a-long-enough-key-31"),
    ("ITTYBIT_WEBHOOK_SECRET", "whsec_not*base64-31", "not*base64-31"),
    ("ITTYBIT_WEBHOOK_SECRET", f"{WEBHOOK_SECRET},whsec_c2hvcnQ", "c2hvcnQ"),
    ("ITTYBIT_WEBHOOK_SECRET", f"{WEBHOOK_SECRET},whsec_c2hvcnQ", WEBHOOK_SECRET[6:]),
    ("NOTIFY_SECRET", "whsec_not*base64-31", "not*base64-31"),
    ("NOTIFY_SECRET", "whsec_c2hvcnQ", "c2hvcnQ"),
    ("DATABASE_URL", "mysql://app:pw-31@db/x", "pw-31"),
    ("DATABASE_URL", "postgres://app:pw-31@db:port/x", "pw-31"),
    ("DATABASE_URL", "postgres://:p?w-31@db:port/x", "w-31"),
    ("DATABASE_URL", "postgresql://db:port/x?password=pw-31", "pw-31"),
    ("NOTIFY_URL", "app.example.com/in?key=k-31", "k-31"),
    ("NOTIFY_URL", "ftp://u:pw-31@app.example.com/in", "pw-31"),
]
#: Taken as given: any text is a key or a token.
NEVER_REFUSED = {"ITTYBIT_API_KEY", "METRICS_TOKEN"}
WITH_NOTIFY = {**PROD, "NOTIFY_URL": "https://app.example.com/in", "NOTIFY_SECRET": WEBHOOK_SECRET}


def variables() -> set[str]:
    return {info.alias or name.upper() for name, info in Settings.model_fields.items()}


def test_every_setting_has_its_refusals_tested() -> None:
    shown = {variable for variable, _, _ in REFUSED_AS_SHOWN}
    secret = {variable for variable, _, _ in REFUSED_SECRETLY}
    assert shown | secret | NEVER_REFUSED == variables()


@pytest.mark.parametrize(("variable", "value", "shown"), REFUSED_AS_SHOWN)
def test_a_refusal_shows_the_value_refused(variable: str, value: str, shown: str) -> None:
    message = refusal({**WITH_NOTIFY, variable: value})
    assert message.startswith(f"{variable}: ")
    # "…, got VALUE", or a duration's "VALUE is not a duration (…)"
    assert message.endswith(f"got {shown}") or message.startswith(f"{variable}: {shown} is not")


@pytest.mark.parametrize(("variable", "value", "secret"), REFUSED_SECRETLY)
def test_a_refusal_never_shows_a_secret(variable: str, value: str, secret: str) -> None:
    message = refusal({**WITH_NOTIFY, variable: value})
    assert message.startswith(f"{variable}: ")
    assert secret not in message
