"""gunicorn settings for the bare app: the project's own, less the hook that counts the
worker in the real app's metrics (the bare app has none)."""

from __future__ import annotations

from typing import Any

from config.gunicorn import *  # noqa: F403  (the Procfile's settings, unchanged)


def post_worker_init(worker: Any) -> None:
    return None
