"""Configuration: typed settings from the environment, and the gunicorn config.

``gunicorn.py`` is the web process's gunicorn config (a composition root); on SQLite it runs
``gunicorn_worker.py``'s worker class, which answers a webhook already wholly received in the
worker's loop thread.
"""

from __future__ import annotations

from config.settings import ConfigError, Settings, parse_duration

__all__ = ["ConfigError", "Settings", "parse_duration"]
