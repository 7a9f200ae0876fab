"""jobhooks: receive and reconcile ittybit job webhooks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["create_app"]


def create_app(
    config: Mapping[str, Any] | None = None, *, web: bool = True, log_level: str | None = None
) -> Flask:
    """Create the app from the environment, or from ``config`` alone (tests pass their own).

    ``web=False`` leaves out what only answers HTTP (the webhooks, the API, the admin view,
    health, ``/metrics`` and the request hooks): the command line's own commands need the
    settings, the database and the outbox, and start in a fraction of the time without
    importing the rest (bench/README.md, "Command start-up"). ``log_level`` stands in for
    LOG_LEVEL's level in this process (a one-off command's ``warning``), settings unchanged.
    """
    # Imported here, not at the top: `import receiver` comes first for every command,
    # `jobhooks --help` included, which needs neither the settings nor the database.
    from config.settings import Settings
    from receiver.web.application import JobhooksFlask

    app = JobhooksFlask(__name__, instance_relative_config=True)
    environ = os.environ if config is None else {key: str(value) for key, value in config.items()}
    settings = Settings.from_env(environ, instance_path=app.instance_path)
    app.extensions["jobhooks.settings"] = settings
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        TESTING=settings.env == "test",
        # The API checks its answers against its document, but not in production.
        API_CHECK_ANSWERS=settings.env != "production",
    )
    from receiver.observe import logs

    logs.configure_logging(level=log_level or settings.log_level, fmt=settings.log_format)
    settings.log_warnings(app.logger)
    if settings.env == "development":
        app.logger.info("APP_ENV=development: development defaults in use, not for production")

    from receiver.flows import outbox
    from receiver.store import engines

    engines.init_app(app, settings)
    outbox.init_app(app, settings)
    if web:
        from receiver.observe import tracing
        from receiver.web import admin, api, errors, headers, health, metrics, turns, webhooks

        # Traces only with OTEL_EXPORTER_OTLP_ENDPOINT; unset, OpenTelemetry is not imported.
        tracing.init_app(app, environ)

        logs.init_app(app)
        metrics.init_app(app, settings)
        errors.init_app(app)
        headers.init_app(app, settings)
        app.register_blueprint(health.bp)
        app.register_blueprint(webhooks.bp)
        api.init_app(app)
        admin.init_app(app, settings)
        turns.init_app(app, settings)
        app.note_plain_functions()
    return app
