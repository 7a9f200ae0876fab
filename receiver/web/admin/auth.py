"""Who may see the admin pages: Flask-Login sessions, the login guard and CSRF checks."""

from __future__ import annotations

import time

from flask import Flask, abort, current_app, flash, redirect, request, session, url_for
from flask_login import AnonymousUserMixin, LoginManager, UserMixin, current_user, logout_user
from flask_wtf.csrf import CSRFProtect
from werkzeug.wrappers import Response

from config.settings import Settings
from receiver.flows.admin_accounts import Admin, find_by_session_token
from receiver.store.engines import get_read_engine

__all__ = [
    "SIGNED_IN_AT",
    "AdminSession",
    "client_ip",
    "current_admin",
    "guard",
    "init_app",
    "safe_next",
]

#: Endpoints reachable without a session.
PUBLIC_ENDPOINTS = frozenset({"admin.login", "admin.static"})
_CSRF = "jobhooks.admin.csrf"
#: The session's key for when its account signed in (Unix seconds).
SIGNED_IN_AT = "signed_in_at"


class AdminSession(UserMixin):  # type: ignore[misc]
    """The signed-in account, as Flask-Login holds it."""

    def __init__(self, admin: Admin) -> None:
        self.admin = admin

    def get_id(self) -> str:
        # The account's session token, never its row id: a new token ends every session.
        return self.admin.session_token


def _load(token: str) -> AdminSession | None:
    admin = find_by_session_token(get_read_engine(), token)
    return None if admin is None else AdminSession(admin)


def current_admin() -> Admin | None:
    """Return the signed-in account, or None."""
    user = current_user
    if isinstance(user, AdminSession):
        return user.admin
    return None


def safe_next(target: str | None) -> str | None:
    """Return ``target`` if it is a path of the admin view, else None (no open redirect)."""
    if not target or not (target == "/admin" or target.startswith(("/admin/", "/admin?"))):
        return None
    if "\\" in target or any(ord(char) < 32 for char in target):
        return None
    return target


def client_ip() -> str:
    """Return the address a request came from, as Heroku's router saw it.

    The router appends the address it saw to ``X-Forwarded-For`` (whatever the client put
    there comes first) and is the only thing that reaches the dyno (config/gunicorn.py);
    without the header, the peer's address.
    """
    forwarded = request.headers.get("X-Forwarded-For", "")
    last = forwarded.rpartition(",")[2].strip()
    return (last or request.remote_addr or "-")[:64]


def _session_too_old() -> bool:
    """Tell whether the signed-in session passed ADMIN_SESSION_MAX, active or not."""
    settings: Settings = current_app.extensions["jobhooks.settings"]
    signed_in_at = session.get(SIGNED_IN_AT)
    if not isinstance(signed_in_at, int | float):
        return True
    return time.time() - signed_in_at > settings.admin_session_max


def guard() -> Response | None:
    """Send a visitor without a session to the login page; check every POST's CSRF token.

    A session ends ADMIN_SESSION_MAX after its sign-in however busy it was, its CSRF
    token with it (the token lives in the session).
    """
    if current_user.is_authenticated and _session_too_old():
        logout_user()
        session.clear()
        flash("Your session has ended: sign in again.", "info")
        return redirect(url_for("admin.login"))
    if request.endpoint not in PUBLIC_ENDPOINTS and not current_user.is_authenticated:
        if request.method == "GET":
            flash("Sign in to see this page.", "info")
            target = request.full_path.rstrip("?")
            return redirect(url_for("admin.login", next=target))
        return redirect(url_for("admin.login"))
    if request.method == "POST":
        csrf: CSRFProtect = current_app.extensions[_CSRF]
        csrf.protect()  # raises CSRFError (400) before the view can change anything
        if any("\x00" in key or "\x00" in value for key, value in request.form.items(multi=True)):
            abort(400, "A field of this form holds a NUL character, which cannot be stored.")
    return None


def init_app(app: Flask, csrf: CSRFProtect) -> None:
    """Set up Flask-Login for the admin accounts."""
    manager = LoginManager()
    manager.anonymous_user = AnonymousUserMixin
    manager.user_loader(_load)
    manager.init_app(app)
    app.extensions[_CSRF] = csrf
