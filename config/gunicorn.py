"""Gunicorn settings for the ``web`` process (``gunicorn wsgi:app -c config/gunicorn.py``)."""

from __future__ import annotations

import os
import sys

from config.settings import ConfigError, Settings

# Validate in the master, so a bad variable stops the process with one line, not a boot loop.
try:
    _settings = Settings.from_env(os.environ)
except ConfigError as exc:
    sys.stderr.write(f"jobhooks: configuration error: {exc}\n")
    sys.exit(2)

bind = f"0.0.0.0:{_settings.port}"
workers = _settings.web_concurrency
worker_class = "sync"
# ittybit gives up on an answer after 5 s; a request stuck this long is better killed.
timeout = 30
graceful_timeout = 25
keepalive = 5
# Heroku's router sets X-Forwarded-*; it is the only thing that can reach the dyno.
forwarded_allow_ips = "*"
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
