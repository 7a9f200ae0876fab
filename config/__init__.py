"""Configuration: typed settings from the environment, and the gunicorn config."""

from __future__ import annotations

from config.settings import ConfigError, Settings, parse_duration

__all__ = ["ConfigError", "Settings", "parse_duration"]
