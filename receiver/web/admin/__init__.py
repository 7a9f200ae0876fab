"""The admin view (``/admin``): server-rendered pages for the people on call.

Sessions are Flask's signed cookie (``SECRET_KEY``) managed by Flask-Login; every form
carries a Flask-WTF CSRF token. Both are confined to ``/admin``: the webhook endpoints and
the application API never open the admin's session or ask for a CSRF token.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from flask import Flask, Request, Response, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect

from config.settings import Settings
from receiver.web.admin import auth, views

# Adds its pages and actions to views.bp when imported.
from receiver.web.admin import endpoints as _endpoint_pages  # noqa: F401

__all__ = ["PREFIX", "SECURITY_HEADERS", "init_app"]

PREFIX = "/admin"
COOKIE_NAME = "jobhooks_admin"
#: Sent with every answer under /admin. No script runs on these pages at all.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _under_admin(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class AdminSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, opened only under /admin.

    Everywhere else (webhooks, the API, probes) the session is the null session: nothing
    is read from or written to a cookie, and no time is spent on it on the webhook path.
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if not _under_admin(request.path):
            return self.make_null_session(app)
        return super().open_session(app, request)


def _security_headers(response: Response) -> Response:
    # The request object, not the proxy: a read through it costs ~9,000 instructions, and
    # this runs after every request, webhooks included.
    if _under_admin(request._get_current_object().path):  # type: ignore[attr-defined]
        for name, value in SECURITY_HEADERS.items():
            response.headers[name] = value
    return response


def _confined_to_admin(app: Flask, hook: Callable[[Response], Response]) -> None:
    """Run the app-wide after-request ``hook`` under /admin alone, where it stood in the chain.

    Flask-Login refreshes or clears its remember cookie after every request through the
    session; only /admin has a session (elsewhere the null session, never holding one), so
    everywhere else the hook has nothing to do but cost the webhook its session lookups.
    """
    hooks = app.after_request_funcs[None]
    index = hooks.index(hook)  # a ValueError if Flask-Login stops registering it

    def under_admin(response: Response) -> Response:
        if _under_admin(request._get_current_object().path):  # type: ignore[attr-defined]
            return hook(response)
        return response

    hooks[index] = under_admin


def init_app(app: Flask, settings: Settings) -> None:
    """Give ``app`` the admin view: its session cookie, login, CSRF and pages."""
    app.secret_key = settings.secret_keys[0]
    app.config.update(
        # Older keys still open sessions they signed: SECRET_KEY rotates as for URLs.
        SECRET_KEY_FALLBACKS=list(settings.secret_keys[1:]),
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_PATH=PREFIX,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_url.startswith("https://"),
        # The cookie is re-signed on every request and refused once its signature is older
        # than this: the session ends after this long without a request.
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.admin_session_idle),
        SESSION_REFRESH_EACH_REQUEST=True,
        # CSRF is checked by the admin blueprint alone (auth.guard), never app-wide.
        WTF_CSRF_CHECK_DEFAULT=False,
        # A token lives in the session and goes with it (idle expiry, ADMIN_SESSION_MAX, a
        # sign-in); its own time limit bounds one kept past them.
        WTF_CSRF_TIME_LIMIT=int(settings.admin_session_max),
    )
    app.session_interface = AdminSessionInterface()
    csrf = CSRFProtect(app)
    auth.init_app(app, csrf)
    _confined_to_admin(app, app.login_manager._update_remember_cookie)  # type: ignore[attr-defined]
    app.after_request(_security_headers)
    app.register_blueprint(views.bp, url_prefix=PREFIX)
