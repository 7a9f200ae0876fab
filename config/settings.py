"""Typed settings read from the environment and validated once, at start-up."""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import SplitResult, urlsplit

from pydantic import BeforeValidator, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

__all__ = [
    "DEV_SECRET_KEY",
    "MIN_SECRET_KEY_LENGTH",
    "WEB_WORKER_TIMEOUT",
    "ConfigError",
    "Settings",
    "decode_webhook_secret",
    "parse_duration",
]

#: Development defaults: known to everyone, so refused in production.
DEV_SECRET_KEY = "dev-secret-key-not-for-production"  # noqa: S105
#: Seconds gunicorn lets a web worker spend on one request before it kills the worker.
WEB_WORKER_TIMEOUT = 30
#: Shortest SECRET_KEY production accepts: it signs sessions and webhook URLs (HMAC-SHA1).
MIN_SECRET_KEY_LENGTH = 32

_ENVIRONMENTS = ("production", "development", "test")
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_LOG_FORMATS = ("json", "text")
_NOTIFY_EVENTS = ("final", "all")
_ON_OFF = ("on", "off")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable.

    It shows the value refused too, unless that is a secret (or a URL's password or query).
    """


def parse_duration(text: str) -> float:
    """Return seconds for ``90``, ``30s``, ``15m``, ``2h`` or ``7d``."""
    match = _DURATION.match(text)
    if match is None:
        message = f"{text!r} is not a duration (use e.g. 30s, 15m, 2h, 7d)"
        raise ValueError(message)
    return float(match.group(1)) * _UNITS[match.group(2)]


def decode_webhook_secret(secret: str) -> bytes:
    """Return the key bytes of a Standard Webhooks ``whsec_…`` secret, padded or not."""
    raw = secret.removeprefix("whsec_").rstrip("=")
    # The reference libraries hand out and accept the key without base64 padding.
    raw += "=" * (-len(raw) % 4)
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        message = "is not a whsec_ secret with a base64 key"
        raise ValueError(message) from None
    if len(key) < 16:
        message = "has a key shorter than 16 bytes"
        raise ValueError(message)
    return key


# --- parsers for the raw text of one variable ---------------------------------------------
# Each runs before pydantic's own checks; a ValueError's text becomes the line after "NAME: ".
# It shows the value it refused ("got …"), except a secret's (secrets, keys, passwords).


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _duration(value: Any) -> Any:
    seconds = parse_duration(value) if isinstance(value, str) else value
    if isinstance(seconds, int | float) and seconds <= 0:
        message = f"must be greater than zero, got {value!r}"
        raise ValueError(message)
    return seconds


def _duration_under(limit: float, why: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        seconds = _duration(value)
        if isinstance(seconds, int | float) and seconds >= limit:
            message = f"must be under {limit:g}s, {why}, got {value!r}"
            raise ValueError(message)
        return seconds

    return BeforeValidator(check)


def _choice(choices: tuple[str, ...]) -> BeforeValidator:
    def check(value: Any) -> Any:
        if isinstance(value, str):
            value = value.lower()
            if value not in choices:
                message = f"must be one of {', '.join(choices)}, got {value!r}"
                raise ValueError(message)
        return value

    return BeforeValidator(check)


def _whole_number(minimum: int, maximum: int | None = None) -> BeforeValidator:
    def check(value: Any) -> Any:
        given = value
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                message = f"must be a whole number, got {value!r}"
                raise ValueError(message) from None
        if isinstance(value, int) and (
            value < minimum or (maximum is not None and value > maximum)
        ):
            bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            message = f"must be {bounds}, got {given}"
            raise ValueError(message)
        return value

    return BeforeValidator(check)


def _duration_or_zero(value: Any) -> Any:
    # 0 is meaningful here: judge every listed event at once (a demo, a test).
    seconds = parse_duration(value) if isinstance(value, str) else value
    if isinstance(seconds, int | float) and seconds < 0:
        message = f"must not be negative, got {value!r}"
        raise ValueError(message)
    return seconds


def _api_version(value: Any) -> Any:
    if isinstance(value, str) and value and not _API_VERSION.fullmatch(value):
        message = f"must be a dated version such as 2025-08-20, got {value!r}"
        raise ValueError(message)
    return value


def _webhook_secrets(value: Any) -> Any:
    keys = []
    for index, secret in enumerate(_csv(value), start=1):
        if isinstance(secret, bytes):
            keys.append(secret)
            continue
        try:
            keys.append(decode_webhook_secret(secret))
        except ValueError as exc:
            message = f"secret #{index} {exc}"
            raise ValueError(message) from None
    return tuple(keys)


def _split_http_url(value: str) -> SplitResult | None:
    """Return the parts of an http(s) URL with a host and a valid port, else None."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (parsing the port is the check)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts


def _http_url(value: Any) -> Any:
    if isinstance(value, str) and value:  # blank: the default, decided by the field's validator
        value = value.rstrip("/")
        if _split_http_url(value) is None:
            message = f"must be an http(s) URL, got {value!r}"
            raise ValueError(message)
    return value


def _shown_url(url: str) -> str:
    """Return ``url`` fit for an error message: its password and query string replaced.

    Either may carry a credential (a database password, an application's key in the query).
    Textual, so that it works on the malformed URLs it is shown for.
    """
    scheme, separator, rest = url.partition("://")
    if separator:
        # The last "@" ends the user info; one in the query only makes more of it hidden.
        userinfo, at, host = rest.rpartition("@")
        if at and ":" in userinfo:
            rest = f"{userinfo.partition(':')[0]}:***@{host}"
        url = scheme + separator + rest
    base = re.split(r"[?#]", url, maxsplit=1)[0]
    return base if base == url else f"{base}?…"


def _notify_urls(value: Any) -> Any:
    urls = _csv(value)
    for index, url in enumerate(urls, start=1):
        if _split_http_url(url) is None:
            message = f"URL #{index} is not an http(s) URL, got {_shown_url(url)!r}"
            raise ValueError(message)
    return urls


def _database_url(value: Any) -> Any:
    if not isinstance(value, str) or not value:  # blank: decided by the field's validator
        return value
    given = value
    # Heroku still hands out the scheme SQLAlchemy dropped.
    for prefix in ("postgres://", "postgresql://"):
        if value.startswith(prefix):
            value = "postgresql+psycopg://" + value.removeprefix(prefix)
            break
    if not value.startswith(("sqlite:", "postgresql+psycopg:")):
        message = f"must be a sqlite:/// or postgres:// URL, got {_shown_url(given)!r}"
        raise ValueError(message)
    # Parse now, so a bad port or a malformed URL stops start-up here, not in a worker.
    try:
        make_url(value)
    except (ArgumentError, ValueError):
        message = f"is not a valid database URL, got {_shown_url(given)!r}"
        raise ValueError(message) from None
    return value


_Csv = BeforeValidator(_csv)
Duration = Annotated[float, BeforeValidator(_duration)]
WebhookKeys = Annotated[tuple[bytes, ...], BeforeValidator(_webhook_secrets)]


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' environment source, over a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # A blank variable counts as unset; names match in any case, as the source's own do.
        return {
            name.lower(): value.strip() for name, value in self._environ.items() if value.strip()
        }


class Settings(BaseSettings):
    """Everything the service reads from its environment."""

    model_config = SettingsConfigDict(
        frozen=True,
        enable_decoding=False,  # comma-separated lists, never JSON
        validate_default=True,  # defaults that depend on APP_ENV or PORT are decided below
        validate_by_name=True,
        extra="ignore",
        hide_input_in_errors=True,
    )

    # Declared in the order they are checked: the first bad variable is the one reported.
    env: Annotated[str, _choice(_ENVIRONMENTS)] = Field("production", alias="APP_ENV")
    secret_keys: Annotated[tuple[str, ...], _Csv] = Field((), alias="SECRET_KEY", repr=False)
    database_url: Annotated[str, BeforeValidator(_database_url)] = Field("", repr=False)
    port: Annotated[int, _whole_number(1, 65535)] = 8000
    public_url: Annotated[str, BeforeValidator(_http_url)] = ""
    webhook_secrets: WebhookKeys = Field((), alias="ITTYBIT_WEBHOOK_SECRET", repr=False)
    webhook_tolerance: Annotated[int, _whole_number(1)] = 300
    max_body_bytes: Annotated[int, _whole_number(256)] = 1024 * 1024
    web_concurrency: Annotated[int, _whole_number(1, 64)] = 2
    web_threads: Annotated[int, _whole_number(1, 64)] = 4
    sqlite_busy_timeout_ms: Annotated[int, _whole_number(0, 60000)] = 3000
    ittybit_api_url: Annotated[str, BeforeValidator(_http_url)] = "https://api.ittybit.com"
    ittybit_api_key: str = Field("", repr=False)
    #: A dated API version (``2025-08-20``) sent as ``Accept-Version``; empty: the key's default.
    ittybit_api_version: Annotated[str, BeforeValidator(_api_version)] = ""
    ittybit_timeout: Duration = 10.0
    # Past the web worker's timeout gunicorn kills the worker mid-request instead of the
    # request giving up.
    api_ittybit_budget: Annotated[
        float, _duration_under(WEB_WORKER_TIMEOUT, "the web worker's timeout")
    ] = 3.0
    stuck_after: Duration = 15 * 60.0
    give_up_after: Duration = 24 * 3600.0
    reconcile_concurrency: Annotated[int, _whole_number(1, 256)] = 8
    reconcile_interval: Duration = 60.0
    reconcile_batch: Annotated[int, _whole_number(1, 10000)] = 100
    lease_seconds: Duration = Field(300.0, alias="RECONCILE_LEASE")
    reconcile_events: Annotated[str, _choice(_ON_OFF)] = "on"
    reconcile_event_pages: Annotated[int, _whole_number(1, 1000)] = 20
    reconcile_events_since: Annotated[float | None, BeforeValidator(_duration)] = None
    #: How long a listed event waits for its webhook before the list applies it as missed.
    webhook_silence_after: Annotated[float, BeforeValidator(_duration_or_zero)] = 10 * 60.0
    notify_urls: Annotated[tuple[str, ...], BeforeValidator(_notify_urls)] = Field(
        (), alias="NOTIFY_URL", repr=False
    )
    notify_secrets: WebhookKeys = Field((), alias="NOTIFY_SECRET", repr=False)
    notify_events: Annotated[str, _choice(_NOTIFY_EVENTS)] = "final"
    notify_max_age: Duration = 3 * 86400.0
    #: An endpoint whose attempts have all failed this long is disabled (as Svix: 5 days).
    notify_disable_after: Duration = 5 * 86400.0
    admin_session_idle: Duration = 8 * 3600.0
    admin_session_max: Duration = 12 * 3600.0
    log_level: Annotated[str, _choice(_LOG_LEVELS)] = "info"
    log_format: Annotated[str, _choice(_LOG_FORMATS)] = "json"
    metrics_token: str = Field("", repr=False)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], *, instance_path: str | Path = "instance"
    ) -> Settings:
        """Build settings from ``environ``; raise ConfigError naming the first bad variable."""
        values = _EnvironSource(cls, environ)()
        production = str(values.get("APP_ENV", "production")).lower() == "production"
        if "database_url" not in values and not production:
            values["database_url"] = f"sqlite:///{Path(instance_path).resolve() / 'jobhooks.db'}"
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(_one_line(cls, exc.errors()[0])) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read only what ``from_env`` hands over: never os.environ behind its back."""
        return (init_settings,)

    @field_validator("secret_keys")
    @classmethod
    def _check_secret_keys(cls, keys: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        env = info.data.get("env")
        if env is None:  # APP_ENV itself is wrong, and is reported first
            return keys
        if env != "production":
            return keys or (DEV_SECRET_KEY,)
        if not keys:
            message = (
                "required in production: set it (comma-separated, newest first), "
                "or run with APP_ENV=development locally"
            )
            raise ValueError(message)
        if DEV_SECRET_KEY in keys:
            message = "the development default is refused in production"
            raise ValueError(message)
        if any(len(key) < MIN_SECRET_KEY_LENGTH for key in keys):
            # The key itself is never echoed; its length and place are enough to find it.
            short = next(i for i, key in enumerate(keys, 1) if len(key) < MIN_SECRET_KEY_LENGTH)
            message = (
                f"every key must be at least {MIN_SECRET_KEY_LENGTH} characters in production "
                f"(key #{short} has {len(keys[short - 1])}; make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
            raise ValueError(message)
        return keys

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, url: str, info: ValidationInfo) -> str:
        if not url and info.data.get("env") == "production":
            # A SQLite file beside the code is lost with the dyno's disk at every restart.
            message = (
                "required in production: the PostgreSQL URL (Heroku's add-on sets it), or "
                "a sqlite:/// path on a disk that outlives restarts"
            )
            raise ValueError(message)
        return url

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, url: str, info: ValidationInfo) -> str:
        if url:
            return url
        if info.data.get("env") == "production":
            message = "required in production (the base URL ittybit can reach)"
            raise ValueError(message)
        return f"http://localhost:{info.data.get('port', 8000)}"

    @field_validator("notify_secrets")
    @classmethod
    def _check_notify_secrets(
        cls, keys: tuple[bytes, ...], info: ValidationInfo
    ) -> tuple[bytes, ...]:
        if info.data.get("notify_urls") and not keys:
            message = "required when NOTIFY_URL is set (whsec_… secrets, newest first)"
            raise ValueError(message)
        return keys

    @property
    def token_only_warning(self) -> str | None:
        """Return the warning owed when deliveries are checked by the URL token alone."""
        if self.env != "production" or self.webhook_secrets:
            return None
        return (
            "ITTYBIT_WEBHOOK_SECRET is unset: deliveries are checked by URL token alone "
            "(no Standard Webhooks signature), and the project-level URL refuses every one"
        )

    @property
    def warnings(self) -> tuple[str, ...]:
        """Return what start-up should warn about, such as a plain-http PUBLIC_URL."""
        if self.env != "production":
            return ()
        found = []
        if self.token_only_warning is not None:
            found.append(self.token_only_warning)
        if self.public_url.startswith("http://"):
            found.append(
                "PUBLIC_URL uses plain http; fine if TLS ends at the router, "
                "otherwise webhook URLs travel unencrypted"
            )
        found.extend(
            f"NOTIFY_URL #{index} uses plain http: notifications travel unencrypted"
            for index, url in enumerate(self.notify_urls, start=1)
            if url.startswith("http://")
        )
        return tuple(found)

    def log_warnings(self, logger: logging.Logger) -> None:
        """Log start-up warnings such as a plain-http PUBLIC_URL."""
        for message in self.warnings:
            logger.warning("config: %s", message)


def _one_line(settings_cls: type[Settings], error: ErrorDetails) -> str:
    """Return ``NAME: what is wrong`` for one pydantic error.

    pydantic's own messages never quote the value (``hide_input_in_errors``): the parsers
    above quote it themselves where it is no secret.
    """
    field = str(error["loc"][0]) if error["loc"] else ""
    info = settings_cls.model_fields.get(field)
    name = info.alias if info is not None and info.alias else field.upper()
    cause = (error.get("ctx") or {}).get("error")
    if error["type"] == "value_error" and isinstance(cause, ValueError):
        text = str(cause)
    else:
        text = error["msg"][:1].lower() + error["msg"][1:]
    return f"{name}: {text}"
