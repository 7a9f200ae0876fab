"""The WSGI entry point: ``gunicorn wsgi:app`` and ``flask --app wsgi …``."""

from __future__ import annotations

from config.settings import ConfigError
from receiver import create_app

try:
    app = create_app()
except ConfigError as exc:
    # One line naming the variable, no traceback, non-zero exit.
    raise SystemExit(f"jobhooks: configuration error: {exc}") from None
