"""Gunicorn settings for the ``web`` process (``gunicorn wsgi:app -c config/gunicorn.py``)."""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any

from gunicorn.glogging import Logger

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

# A per-submission webhook URL carries a signed token: anyone holding it may post to it,
# so it must not reach the access log (or an error line quoting the request).
_WEBHOOK_TOKEN = re.compile(r"(/webhooks/ittybit/)[^\s/?\"]+")


class _RedactWebhookTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _WEBHOOK_TOKEN.sub(r"\1[token]", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


_REDACT = _RedactWebhookTokens()


class RedactingLogger(Logger):  # type: ignore[misc]
    """Gunicorn's logger, with webhook-URL tokens cut out of access and error lines."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            log.addFilter(_REDACT)


logger_class = RedactingLogger
