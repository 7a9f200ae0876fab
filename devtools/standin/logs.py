"""The stand-in's loggers, which never show the token of a per-submission webhook URL."""

from __future__ import annotations

import logging
import re

__all__ = ["get_logger", "redact"]

# A per-submission webhook URL ends in a signed token, and whoever holds the URL may post
# to it: a credential, shown as `/webhooks/ittybit/[token]` as the receiver's own log does.
_WEBHOOK_TOKEN = re.compile(r"(/webhooks/ittybit/)[^\s/?#\"'<>]+")


def redact(text: str) -> str:
    """Return ``text`` with the token of every webhook URL in it replaced by ``[token]``."""
    return _WEBHOOK_TOKEN.sub(r"\1[token]", text)


class _RedactTokens(logging.Filter):
    """Cut tokens out of a record's message and traceback, whichever code put them there."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        if record.exc_info and not record.exc_text:
            # Formatters print exc_text as it is when it is set.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


_REDACT_TOKENS = _RedactTokens()


def get_logger(name: str) -> logging.Logger:
    """Return the logger ``name``, with webhook URL tokens cut out of what it logs."""
    logger = logging.getLogger(name)
    logger.addFilter(_REDACT_TOKENS)  # once: addFilter skips a filter it already has
    return logger
