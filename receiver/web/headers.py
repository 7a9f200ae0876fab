"""Headers every answer carries: ``nosniff`` always, HSTS when the service is on https."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, Response

from config.settings import Settings

__all__ = ["HSTS", "init_app"]

#: A year, as browsers' preload lists ask; subdomains are not the service's to speak for.
HSTS = "max-age=31536000"


def _add_headers(pairs: tuple[tuple[str, str], ...]) -> Callable[[Response], Response]:
    def add(response: Response) -> Response:
        headers = response.headers
        for name, value in pairs:
            headers[name] = value
        return response

    return add


def init_app(app: Flask, settings: Settings) -> None:
    """Send ``X-Content-Type-Options: nosniff`` on every answer (JSON ones included).

    With an https ``PUBLIC_URL`` also ``Strict-Transport-Security``: a browser that once
    reached the admin view over https never tries plain http there again.
    """
    pairs = [("X-Content-Type-Options", "nosniff")]
    if settings.public_url.startswith("https://"):
        pairs.append(("Strict-Transport-Security", HSTS))
    app.after_request(_add_headers(tuple(pairs)))
