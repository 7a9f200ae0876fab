"""How values are shown on the admin pages: times, JSON bodies, and never a secret.

Everything that came from outside (bodies, headers, reasons, errors) passes through
:func:`redact`, which cuts webhook-URL tokens out; headers named like a credential are
shown as ``[redacted]`` whatever they hold.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint

from receiver.observe.logs import redact_tokens

__all__ = [
    "REDACTED",
    "clip",
    "elide_url",
    "link_or_none",
    "pretty_body",
    "redact",
    "register",
    "shown_headers",
    "tally",
    "truncate",
    "when",
]

REDACTED = "[redacted]"
_SECRET_HEADER_WORDS = ("signature", "authorization", "cookie", "token", "secret", "key")


#: Longest text a page shows of one value (a body is at most MAX_BODY_BYTES, 1 MiB).
SHOWN_CHARACTERS = 100_000
#: The characters a token is made of: a cut may leave part of one at the end.
_TOKEN_CHARACTERS = string.ascii_letters + string.digits + "_.-"


def truncate(text: str, limit: int = SHOWN_CHARACTERS) -> str:
    """Return ``text`` cut to ``limit`` characters, saying how much was left out.

    A token cut in two no longer has a token's shape, so whatever run of token characters
    the cut ends in is left out too, rather than shown half redacted.
    """
    if len(text) <= limit:
        return text
    kept = text[:limit].rstrip(_TOKEN_CHARACTERS)
    return f"{kept}… ({len(text) - len(kept)} more characters not shown)"


def clip(value: Any, limit: int) -> str:
    """Return the first ``limit`` characters of ``value``, ``…`` when there are more, tokens cut."""
    text = "" if value is None else str(value)
    if len(text) <= limit:
        return redact_tokens(text)
    return redact_tokens(text[:limit].rstrip(_TOKEN_CHARACTERS)) + "…"


def redact(value: Any) -> str:
    """Return ``value`` as text, cut to a length a page can show, tokens replaced by ``[token]``."""
    if value is None:
        return ""
    return redact_tokens(truncate(str(value)))


def when(value: datetime | None) -> str:
    """Return a time as ``2026-11-30 14:05:09 UTC``, or ``-``."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def pretty_body(body: str) -> str:
    """Return a stored body indented when it is JSON (as it was otherwise), tokens cut."""
    try:
        text = json.dumps(json.loads(body), indent=2, ensure_ascii=False, sort_keys=False)
    except ValueError:
        text = body
    return redact(text)


def shown_headers(headers: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Return stored headers to show: a signature or credential only as ``[redacted]``."""
    shown = []
    for name, value in sorted((headers or {}).items()):
        lowered = name.lower()
        if any(word in lowered for word in _SECRET_HEADER_WORDS):
            shown.append((name, REDACTED))
        else:
            shown.append((name, redact(value)))
    return shown


def elide_url(url: str | None) -> str:
    """Return a URL without its query, fragment or credentials (they may hold a key)."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    elided = f"{parts.scheme}://{host}{redact(parts.path)}"
    if parts.query or parts.fragment:
        elided += "?…"
    return elided


def link_or_none(url: str | None) -> str | None:
    """Return ``url`` if it is safe to link to (http or https), else None."""
    if url and urlsplit(url).scheme in ("http", "https"):
        return redact(url)
    return None


def tally(counts: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Return a reconcile pass's stored tally as lines to show, in words, not Python values.

    A value that is not there (``None``: no cursor, no note, not aborted) leaves its line
    out; a flag reads ``yes`` or ``no``; a list is its items, or ``none``.
    """
    lines = []
    for name, value in counts.items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, list | tuple):
            text = ", ".join(redact(item) for item in value) or "none"
        elif isinstance(value, str | int | float):
            text = redact(value)
        else:  # nothing else is stored today; JSON at least never reads as Python
            text = redact(json.dumps(value))
        lines.append((name, text))
    return lines


def register(bp: Blueprint) -> None:
    """Make the helpers available to the admin templates as filters."""
    bp.add_app_template_filter(redact, "redact")
    bp.add_app_template_filter(clip, "clip")
    bp.add_app_template_filter(when, "when")
    bp.add_app_template_filter(elide_url, "elide_url")
    bp.add_app_template_filter(link_or_none, "link_or_none")
    bp.add_app_template_filter(tally, "tally")
