"""Who may see the admin pages: Flask-Login sessions, the login guard and CSRF checks."""

from __future__ import annotations

from flask import Flask, current_app, flash, redirect, request, url_for
from flask_login import AnonymousUserMixin, LoginManager, UserMixin, current_user
from flask_wtf.csrf import CSRFProtect
from werkzeug.wrappers import Response

from receiver.flows.admin_accounts import Admin, find_by_session_token
from receiver.store.engines import get_read_engine

__all__ = ["AdminSession", "current_admin", "guard", "init_app", "safe_next"]

#: Endpoints reachable without a session.
PUBLIC_ENDPOINTS = frozenset({"admin.login", "admin.static"})
_CSRF = "jobhooks.admin.csrf"


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


def guard() -> Response | None:
    """Send a visitor without a session to the login page; check every POST's CSRF token."""
    if request.endpoint not in PUBLIC_ENDPOINTS and not current_user.is_authenticated:
        if request.method == "GET":
            flash("Sign in to see this page.", "info")
            target = request.full_path.rstrip("?")
            return redirect(url_for("admin.login", next=target))
        return redirect(url_for("admin.login"))
    if request.method == "POST":
        csrf: CSRFProtect = current_app.extensions[_CSRF]
        csrf.protect()  # raises CSRFError (400) before the view can change anything
    return None


def init_app(app: Flask, csrf: CSRFProtect) -> None:
    """Set up Flask-Login for the admin accounts."""
    manager = LoginManager()
    manager.anonymous_user = AnonymousUserMixin
    manager.user_loader(_load)
    manager.init_app(app)
    app.extensions[_CSRF] = csrf
