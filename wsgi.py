"""The WSGI entry point: ``gunicorn wsgi:app`` and ``flask --app wsgi …``."""

from __future__ import annotations

import sys

from config.settings import ConfigError
from receiver import create_app

try:
    app = create_app()
except ConfigError as exc:
    # One line naming the variable, no traceback; status 2, as for bad arguments.
    sys.stderr.write(f"jobhooks: configuration error: {exc}\n")
    raise SystemExit(2) from None
