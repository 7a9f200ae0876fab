"""Admin accounts: create, list and delete them, and check a login with its lock-out.

Shared by ``jobhooks admin …`` and the login form. Passwords are hashed with werkzeug's
scrypt (memory-hard, salted: 32 MiB and tens of milliseconds a check). Counted in the
database, so that every web worker agrees:

- the throttle: an address gets :data:`THROTTLE_ATTEMPTS` attempts a
  :data:`THROTTLE_WINDOW`, refused before any hash is computed;
- the lock-out: :data:`LOCKOUT_FAILURES` wrong passwords for an account from one address
  within :data:`LOCKOUT_WINDOW` refuse that account to that address for
  :data:`LOCKOUT_FOR` (a wrong password meanwhile starts it again). Other addresses are
  not locked out: someone guessing cannot keep the right password out forever.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from receiver.store.models import AdminLoginAttempt, AdminLoginFailure, AdminUser

__all__ = [
    "LOCKOUT_FAILURES",
    "LOCKOUT_FOR",
    "LOCKOUT_WINDOW",
    "MIN_PASSWORD_LENGTH",
    "THROTTLE_ATTEMPTS",
    "THROTTLE_WINDOW",
    "Admin",
    "AdminError",
    "admit_attempt",
    "authenticate",
    "create_admin",
    "delete_admin",
    "end_sessions",
    "find_by_session_token",
    "list_admins",
    "normalise_email",
    "set_password",
    "unlock_admin",
]

LOCKOUT_FAILURES = 5
LOCKOUT_WINDOW = timedelta(minutes=15)
LOCKOUT_FOR = LOCKOUT_WINDOW
THROTTLE_ATTEMPTS = 10
THROTTLE_WINDOW = timedelta(minutes=1)
MIN_PASSWORD_LENGTH = 12
#: werkzeug's scrypt: N=2**15, r=8, p=1 (32 MiB per check).
_METHOD = "scrypt"

_admins = AdminUser.__table__  # type: ignore[attr-defined]
_failures = AdminLoginFailure.__table__  # type: ignore[attr-defined]
_attempts = AdminLoginAttempt.__table__  # type: ignore[attr-defined]
_ADMIN_COLUMNS = (
    _admins.c.id,
    _admins.c.email,
    _admins.c.session_token,
    _admins.c.created_at,
    _admins.c.last_login_at,
    _admins.c.locked_until,
)


@cache
def _no_account_hash() -> str:
    """Return a hash to check when no account matches (made once, on the first login).

    An unknown email then costs what a wrong password does, so the answer's timing does
    not tell which accounts exist.
    """
    return generate_password_hash(secrets.token_urlsafe(16), method=_METHOD)


class AdminError(ValueError):
    """An account cannot be created or found; the message says why."""


@dataclass(frozen=True, slots=True)
class Admin:
    """An admin account as the view and the CLI see it: never its password hash."""

    id: int
    email: str
    session_token: str
    created_at: datetime
    last_login_at: datetime | None
    locked_until: datetime | None


def normalise_email(email: str) -> str:
    """Return the email as accounts are keyed: trimmed and lower-cased; refuse a non-email."""
    text = email.strip().lower()
    local, at, domain = text.partition("@")
    if not at or not local or not domain or len(text) > 254 or not text.isprintable():
        message = f"{email!r} is not an email address"
        raise AdminError(message)
    if any(char.isspace() for char in text):
        message = f"{email!r} is not an email address"
        raise AdminError(message)
    return text


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        message = f"the password must be at least {MIN_PASSWORD_LENGTH} characters"
        raise AdminError(message)


def create_admin(engine: Engine, email: str, password: str, *, now: datetime) -> Admin:
    """Add an account; raise AdminError for a bad email, a short password or a taken email."""
    address = normalise_email(email)
    _check_password(password)
    values = {
        "email": address,
        "password_hash": generate_password_hash(password, method=_METHOD),
        "session_token": secrets.token_urlsafe(32),
        "created_at": now,
    }
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(_admins).values(values))
    except IntegrityError:
        message = f"an account for {address} exists already"
        raise AdminError(message) from None
    found = _find(engine, _admins.c.email == address)
    assert found is not None
    return found


def list_admins(engine: Engine) -> list[Admin]:
    """Return every account, by email."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(*_ADMIN_COLUMNS).order_by(_admins.c.email))
        return [Admin(*row) for row in rows]


def delete_admin(engine: Engine, email: str) -> None:
    """Delete an account and its failed logins; its sessions end with it."""
    address = normalise_email(email)
    with engine.begin() as conn:
        admin_id = _account_id(conn, address)
        conn.execute(sa.delete(_failures).where(_failures.c.admin_id == admin_id))
        conn.execute(sa.delete(_admins).where(_admins.c.id == admin_id))


def _account_id(conn: sa.Connection, address: str) -> int:
    admin_id: int | None = conn.execute(
        sa.select(_admins.c.id).where(_admins.c.email == address)
    ).scalar_one_or_none()
    if admin_id is None:
        message = f"no account for {address}"
        raise AdminError(message)
    return admin_id


def unlock_admin(engine: Engine, email: str) -> None:
    """Forget an account's failed logins: every address may try it again at once."""
    address = normalise_email(email)
    with engine.begin() as conn:
        admin_id = _account_id(conn, address)
        conn.execute(sa.delete(_failures).where(_failures.c.admin_id == admin_id))
        conn.execute(sa.update(_admins).where(_admins.c.id == admin_id).values(locked_until=None))


def set_password(engine: Engine, email: str, password: str) -> None:
    """Give an account a new password; its sessions end and its lock-outs are lifted."""
    address = normalise_email(email)
    _check_password(password)
    password_hash = generate_password_hash(password, method=_METHOD)  # outside the write lock
    with engine.begin() as conn:
        admin_id = _account_id(conn, address)
        conn.execute(sa.delete(_failures).where(_failures.c.admin_id == admin_id))
        conn.execute(
            sa.update(_admins)
            .where(_admins.c.id == admin_id)
            .values(
                password_hash=password_hash,
                session_token=secrets.token_urlsafe(32),
                locked_until=None,
            )
        )


def admit_attempt(engine: Engine, client_ip: str, *, now: datetime) -> float | None:
    """Count a sign-in attempt from ``client_ip``; return None, or seconds to wait if refused.

    Refused attempts are not counted: the wait ends a minute after the oldest admitted one.
    """
    since = now - THROTTLE_WINDOW
    with engine.begin() as conn:
        # Every address's old attempts go: the table holds one minute of attempts at most.
        conn.execute(sa.delete(_attempts).where(_attempts.c.attempted_at <= since))
        recent = conn.execute(
            sa.select(sa.func.count(), sa.func.min(_attempts.c.attempted_at)).where(
                _attempts.c.client_ip == client_ip, _attempts.c.attempted_at > since
            )
        ).one()
        if recent[0] >= THROTTLE_ATTEMPTS:
            wait = (recent[1] + THROTTLE_WINDOW - now).total_seconds()
            return float(max(1, math.ceil(wait)))
        conn.execute(sa.insert(_attempts).values(client_ip=client_ip, attempted_at=now))
    return None


def find_by_session_token(engine: Engine, token: str) -> Admin | None:
    """Return the account a session names, or None (deleted, or its sessions ended)."""
    return _find(engine, _admins.c.session_token == token)


def end_sessions(engine: Engine, admin_id: int) -> None:
    """End every session of an account (logout): its cookies name a token no longer valid."""
    with engine.begin() as conn:
        conn.execute(
            sa.update(_admins)
            .where(_admins.c.id == admin_id)
            .values(session_token=secrets.token_urlsafe(32))
        )


def authenticate(
    engine: Engine, email: str, password: str, *, now: datetime, client_ip: str = "-"
) -> Admin | None:
    """Return the account if the password is right and ``client_ip`` is not locked out.

    Every refusal looks the same to the caller (unknown email, wrong password, locked);
    a wrong password is recorded for the account and address, locked out or not, and the
    fifth within the window locks the account out for that address.
    """
    try:
        address = normalise_email(email)
    except AdminError:
        address = ""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(_admins.c.id, _admins.c.password_hash).where(_admins.c.email == address)
        ).first()
        locked = row is not None and _locked_out(conn, row.id, client_ip, now)
    # The hash is checked in every case, outside any transaction: it takes tens of
    # milliseconds, and SQLite's write lock must not wait on it.
    password_hash = _no_account_hash() if row is None else row.password_hash
    right = check_password_hash(password_hash, password)
    if row is None:
        return None
    if not right:
        _record_failure(engine, row.id, client_ip, now=now)
        return None
    if locked:
        return None
    with engine.begin() as conn:
        conn.execute(
            sa.delete(_failures).where(
                _failures.c.admin_id == row.id, _failures.c.client_ip == client_ip
            )
        )
        conn.execute(sa.update(_admins).where(_admins.c.id == row.id).values(last_login_at=now))
    return _find(engine, _admins.c.id == row.id)


def _locked_out(conn: sa.Connection, admin_id: int, client_ip: str, now: datetime) -> bool:
    """Tell whether a failure of the last LOCKOUT_FOR was the fifth within LOCKOUT_WINDOW."""
    times = conn.execute(
        sa.select(_failures.c.failed_at)
        .where(
            _failures.c.admin_id == admin_id,
            _failures.c.client_ip == client_ip,
            _failures.c.failed_at > now - LOCKOUT_FOR - LOCKOUT_WINDOW,
        )
        .order_by(_failures.c.failed_at)
    ).scalars()
    failed = list(times)
    first = LOCKOUT_FAILURES - 1
    return any(
        at > now - LOCKOUT_FOR and at - failed[index - first] < LOCKOUT_WINDOW
        for index, at in enumerate(failed[first:], start=first)
    )


def _record_failure(engine: Engine, admin_id: int, client_ip: str, *, now: datetime) -> None:
    with engine.begin() as conn:
        # The account's row lock orders concurrent failures (PostgreSQL; SQLite has one
        # writer anyway), so the fifth is always seen as the fifth.
        conn.execute(
            sa.select(_admins.c.id).where(_admins.c.id == admin_id).with_for_update()
        ).first()
        conn.execute(
            sa.insert(_failures).values(admin_id=admin_id, failed_at=now, client_ip=client_ip)
        )
        if _locked_out(conn, admin_id, client_ip, now):
            # Shown by `jobhooks admin list`; the lock-out itself is the count above.
            conn.execute(
                sa.update(_admins)
                .where(_admins.c.id == admin_id)
                .values(locked_until=now + LOCKOUT_FOR)
            )


def _find(engine: Engine, where: sa.ColumnElement[bool]) -> Admin | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(*_ADMIN_COLUMNS).where(where)).first()
    return None if row is None else Admin(*row)
