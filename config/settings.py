"""Typed settings read from the environment and validated once, at start-up."""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

__all__ = [
    "DEV_SECRET_KEY",
    "ConfigError",
    "Settings",
    "parse_duration",
]

#: Development defaults: known to everyone, so refused in production.
DEV_SECRET_KEY = "dev-secret-key-not-for-production"  # noqa: S105

_ENVIRONMENTS = ("production", "development", "test")
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_LOG_FORMATS = ("json", "text")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


def parse_duration(text: str) -> float:
    """Return seconds for ``90``, ``30s``, ``15m``, ``2h`` or ``7d``."""
    match = _DURATION.match(text)
    if match is None:
        message = f"{text!r} is not a duration (use e.g. 30s, 15m, 2h, 7d)"
        raise ValueError(message)
    return float(match.group(1)) * _UNITS[match.group(2)]


def decode_webhook_secret(secret: str) -> bytes:
    """Return the key bytes of a Standard Webhooks ``whsec_…`` secret."""
    raw = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        message = "is not a whsec_ secret with a base64 key"
        raise ValueError(message) from None
    if len(key) < 16:
        message = "has a key shorter than 16 bytes"
        raise ValueError(message)
    return key


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service reads from its environment."""

    env: str = "production"
    database_url: str = ""
    secret_keys: tuple[str, ...] = ()
    public_url: str = "http://localhost:8000"
    webhook_secrets: tuple[bytes, ...] = ()
    webhook_tolerance: int = 300
    max_body_bytes: int = 1024 * 1024
    port: int = 8000
    web_concurrency: int = 2
    sqlite_busy_timeout_ms: int = 3000
    ittybit_api_url: str = "https://api.ittybit.com"
    ittybit_api_key: str = ""
    ittybit_timeout: float = 10.0
    stuck_after: float = 15 * 60
    give_up_after: float = 24 * 3600
    reconcile_concurrency: int = 8
    reconcile_interval: float = 60.0
    reconcile_batch: int = 100
    lease_seconds: float = 300.0
    log_level: str = "info"
    log_format: str = "json"
    metrics_token: str = field(default="", repr=False)
    notify_urls: tuple[str, ...] = ()
    notify_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    notify_events: str = "final"
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], *, instance_path: str | Path = "instance"
    ) -> Settings:
        """Build settings from ``environ``; raise ConfigError naming the first bad variable."""
        reader = _Reader(environ)
        env = reader.choice("APP_ENV", _ENVIRONMENTS, default="production")
        production = env == "production"

        default_db = f"sqlite:///{Path(instance_path).resolve() / 'jobhooks.db'}"
        database_url = reader.database_url("DATABASE_URL", default=default_db)

        secret_keys = reader.csv("SECRET_KEY", default="" if production else DEV_SECRET_KEY)
        if not secret_keys:
            raise ConfigError("SECRET_KEY: required in production (comma-separated, newest first)")
        if production and DEV_SECRET_KEY in secret_keys:
            raise ConfigError("SECRET_KEY: the development default is refused in production")
        if production and any(len(key) < 16 for key in secret_keys):
            raise ConfigError("SECRET_KEY: every key must be at least 16 characters in production")

        public_url = reader.public_url("PUBLIC_URL", production=production)

        raw_secrets = reader.csv("ITTYBIT_WEBHOOK_SECRET", default="")
        webhook_secrets = []
        for index, secret in enumerate(raw_secrets, start=1):
            try:
                webhook_secrets.append(decode_webhook_secret(secret))
            except ValueError as exc:
                message = f"ITTYBIT_WEBHOOK_SECRET: secret #{index} {exc}"
                raise ConfigError(message) from None

        api_key = reader.text("ITTYBIT_API_KEY", default="")
        return cls(
            env=env,
            database_url=database_url,
            secret_keys=tuple(secret_keys),
            public_url=public_url,
            webhook_secrets=tuple(webhook_secrets),
            webhook_tolerance=reader.integer("WEBHOOK_TOLERANCE", default=300, minimum=1),
            max_body_bytes=reader.integer("MAX_BODY_BYTES", default=1024 * 1024, minimum=256),
            port=reader.integer("PORT", default=8000, minimum=1, maximum=65535),
            web_concurrency=reader.integer("WEB_CONCURRENCY", default=2, minimum=1, maximum=64),
            sqlite_busy_timeout_ms=reader.integer(
                "SQLITE_BUSY_TIMEOUT_MS", default=3000, minimum=0, maximum=60000
            ),
            ittybit_api_url=reader.http_url("ITTYBIT_API_URL", default="https://api.ittybit.com"),
            ittybit_api_key=api_key,
            ittybit_timeout=reader.duration("ITTYBIT_TIMEOUT", default=10.0),
            stuck_after=reader.duration("STUCK_AFTER", default=15 * 60.0),
            give_up_after=reader.duration("GIVE_UP_AFTER", default=24 * 3600.0),
            reconcile_concurrency=reader.integer(
                "RECONCILE_CONCURRENCY", default=8, minimum=1, maximum=256
            ),
            reconcile_interval=reader.duration("RECONCILE_INTERVAL", default=60.0),
            reconcile_batch=reader.integer(
                "RECONCILE_BATCH", default=100, minimum=1, maximum=10000
            ),
            lease_seconds=reader.duration("RECONCILE_LEASE", default=300.0),
            log_level=reader.choice("LOG_LEVEL", _LOG_LEVELS, default="info"),
            log_format=reader.choice("LOG_FORMAT", _LOG_FORMATS, default="json"),
            metrics_token=reader.text("METRICS_TOKEN", default=""),
            warnings=tuple(reader.warnings),
        )

    def log_warnings(self, logger: logging.Logger) -> None:
        """Log start-up warnings such as a plain-http PUBLIC_URL."""
        for message in self.warnings:
            logger.warning("config: %s", message)


class _Reader:
    """Read typed values from an environment mapping, naming the variable on error."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.warnings: list[str] = []

    def _get(self, name: str) -> str | None:
        value = self.environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(self, name: str, *, default: str) -> str:
        value = self._get(name)
        return default if value is None else value

    def choice(self, name: str, choices: tuple[str, ...], *, default: str) -> str:
        value = self.text(name, default=default).lower()
        if value not in choices:
            message = f"{name}: must be one of {', '.join(choices)}, got {value!r}"
            raise ConfigError(message)
        return value

    def integer(self, name: str, *, default: int, minimum: int, maximum: int | None = None) -> int:
        value = self._get(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            message = f"{name}: must be a whole number, got {value!r}"
            raise ConfigError(message) from None
        if number < minimum or (maximum is not None and number > maximum):
            bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            message = f"{name}: must be {bounds}, got {number}"
            raise ConfigError(message)
        return number

    def duration(self, name: str, *, default: float) -> float:
        value = self._get(name)
        if value is None:
            return default
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            message = f"{name}: {exc}"
            raise ConfigError(message) from None
        if seconds <= 0:
            message = f"{name}: must be greater than zero"
            raise ConfigError(message)
        return seconds

    def csv(self, name: str, *, default: str) -> list[str]:
        value = self.text(name, default=default)
        return [part.strip() for part in value.split(",") if part.strip()]

    def database_url(self, name: str, *, default: str) -> str:
        value = self.text(name, default=default)
        # Heroku still hands out the scheme SQLAlchemy dropped.
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                value = "postgresql+psycopg://" + value.removeprefix(prefix)
                break
        if not value.startswith(("sqlite:", "postgresql+psycopg:")):
            message = f"{name}: must be a sqlite:/// or postgres:// URL"
            raise ConfigError(message)
        # Parse now, so a bad port or a malformed URL stops start-up here, not in a worker.
        try:
            make_url(value)
        except (ArgumentError, ValueError):
            message = f"{name}: is not a valid database URL"
            raise ConfigError(message) from None
        return value

    def http_url(self, name: str, *, default: str) -> str:
        value = self.text(name, default=default).rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            message = f"{name}: must be an http(s) URL, got {value!r}"
            raise ConfigError(message)
        return value

    def public_url(self, name: str, *, production: bool) -> str:
        value = self._get(name)
        if value is None:
            if production:
                message = f"{name}: required in production (the base URL ittybit can reach)"
                raise ConfigError(message)
            return "http://localhost:8000"
        url = self.http_url(name, default=value)
        if production and url.startswith("http://"):
            self.warnings.append(
                f"{name} uses plain http; fine if TLS ends at the router, "
                "otherwise webhook URLs travel unencrypted"
            )
        return url
