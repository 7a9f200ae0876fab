"""Who gets into the admin view: sessions, lock-out, CSRF, the cookie, the headers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from freezegun import freeze_time
from sqlalchemy.engine import Engine

from receiver import create_app
from receiver.flows.admin_accounts import LOCKOUT_FAILURES, create_admin, delete_admin
from receiver.store.engines import get_engine
from receiver.store.models import AdminUser, utcnow
from receiver.web.admin import SECURITY_HEADERS
from tests.admin_helpers import (
    EMAIL,
    PASSWORD,
    add_event,
    add_notification,
    csrf_token,
    events,
    notifications,
    post_form,
    sign_in,
)
from tests.helpers import encode, job_payload, signed_headers

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
_admins = AdminUser.__table__  # type: ignore[attr-defined]


@pytest.fixture
def account(engine: Engine) -> None:
    create_admin(engine, EMAIL, PASSWORD, now=utcnow())


def _example_url(rule: Any) -> str:
    from werkzeug.routing import IntegerConverter

    values = {
        name: 1 if isinstance(rule._converters[name], IntegerConverter) else "sub_1"
        for name in rule.arguments
    }
    return str(rule.build(values, append_unknown=False)[1])


def _admin_rules(app: Flask) -> list[tuple[str, str]]:
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("admin.") or rule.endpoint in (
            "admin.login",
            "admin.static",
        ):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((method, _example_url(rule)))
    return found


def test_every_admin_url_sends_a_visitor_to_the_login_page(
    app: Flask, client: FlaskClient, engine: Engine
) -> None:
    event_id = add_event(engine, "u1", at=utcnow(), outcome="unmatched", submission_id="sub_1")
    rules = _admin_rules(app)
    # Every page and action the view has, so a new one cannot forget the guard.
    assert {url for _, url in rules} >= {
        "/admin/",
        "/admin/submissions",
        "/admin/submissions/sub_1",
        "/admin/deliveries",
        "/admin/deliveries/1",
        "/admin/notifications",
        "/admin/logout",
        "/admin/actions/replay",
        "/admin/actions/reconcile",
        "/admin/actions/retry-notification",
    }
    for method, url in rules:
        response = client.open(url, method=method, data={"event_id": str(event_id)})
        assert response.status_code == 302, (method, url)
        assert response.headers["Location"].startswith("/admin/login"), (method, url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(events.c.outcome)).scalar_one() == "unmatched"


def test_a_page_asked_for_before_signing_in_is_shown_after(
    client: FlaskClient, account: None
) -> None:
    response = client.get("/admin/deliveries?outcome=unmatched")
    assert response.headers["Location"] == "/admin/login?next=/admin/deliveries?outcome%3Dunmatched"
    signed = sign_in(client, next_url="/admin/deliveries?outcome%3Dunmatched")
    assert signed.status_code == 302
    assert signed.headers["Location"] == "/admin/deliveries?outcome=unmatched"


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/admin", "/api/x", "/administrators"]
)
def test_login_never_redirects_off_the_admin_view(
    client: FlaskClient, account: None, target: str
) -> None:
    response = sign_in(client, next_url=target)
    assert response.headers["Location"] == "/admin/"


def test_the_right_password_signs_in_and_a_wrong_one_does_not(
    client: FlaskClient, account: None, engine: Engine
) -> None:
    wrong = sign_in(client, password="not the password at all")
    assert wrong.status_code == 401
    assert "Wrong email or password" in wrong.text
    assert client.get("/admin/").status_code == 302

    right = sign_in(client, email="  OnCall@Example.com ")
    assert right.status_code == 302
    page = client.get("/admin/")
    assert page.status_code == 200
    assert EMAIL in page.text
    with engine.connect() as conn:
        assert conn.execute(sa.select(_admins.c.last_login_at)).scalar_one() is not None


def test_an_unknown_email_is_answered_like_a_wrong_password(
    client: FlaskClient, account: None
) -> None:
    unknown = sign_in(client, email="nobody@example.com")
    wrong = sign_in(client, password="not the password at all")
    assert unknown.status_code == wrong.status_code == 401
    assert _flash(unknown.text) == _flash(wrong.text)


def _flash(html: str) -> str:
    start = html.index('class="flash')
    return html[start : html.index("</p>", start)]


@pytest.mark.slow
def test_five_failures_lock_the_account_for_fifteen_minutes(
    app_config: dict[str, Any], account: None
) -> None:
    # Two apps on one database stand for two gunicorn workers: they count failures together.
    first, second = create_app(app_config), create_app(app_config)
    try:
        with freeze_time(NOW) as clock:
            for attempt in range(LOCKOUT_FAILURES):
                app = first if attempt % 2 else second
                assert sign_in(app.test_client(), password=f"wrong {attempt}").status_code == 401
                clock.tick(timedelta(seconds=30))
            locked = sign_in(first.test_client())
            wrong = sign_in(first.test_client(), password="still wrong")
            assert locked.status_code == 401
            assert _flash(locked.text) == _flash(wrong.text)  # answered like any failure
            clock.tick(timedelta(minutes=14))
            assert sign_in(second.test_client()).status_code == 401
            clock.tick(timedelta(minutes=1, seconds=1))
            assert sign_in(second.test_client()).status_code == 302
    finally:
        get_engine(first).dispose()
        get_engine(second).dispose()


@pytest.mark.slow
def test_failures_spread_over_more_than_fifteen_minutes_do_not_lock(
    client: FlaskClient, account: None
) -> None:
    with freeze_time(NOW) as clock:
        for attempt in range(LOCKOUT_FAILURES * 2):
            assert sign_in(client, password=f"wrong {attempt}").status_code == 401
            clock.tick(timedelta(minutes=4))
        assert sign_in(client).status_code == 302


@pytest.mark.slow
def test_a_success_starts_the_count_again(client: FlaskClient, account: None) -> None:
    with freeze_time(NOW):
        for attempt in range(LOCKOUT_FAILURES - 1):
            sign_in(client, password=f"wrong {attempt}")
        assert sign_in(client).status_code == 302
        for attempt in range(LOCKOUT_FAILURES - 1):
            sign_in(client, password=f"wrong again {attempt}")
        assert sign_in(client).status_code == 302


def test_a_post_without_its_csrf_token_is_refused_and_changes_nothing(
    client: FlaskClient, account: None, engine: Engine
) -> None:
    event_id = add_event(engine, "u1", at=utcnow(), outcome="unmatched", submission_id="sub_1")
    dead = add_notification(engine, "msg_dead", at=utcnow(), status="dead")
    sign_in(client)
    for action, fields in (
        ("/admin/actions/replay", {"event_id": event_id}),
        ("/admin/actions/retry-notification", {"notification_id": dead}),
        ("/admin/actions/reconcile", {"submission_id": "sub_1"}),
        ("/admin/logout", {}),
    ):
        for token in (None, "forged-token"):
            data = dict(fields) if token is None else {**fields, "csrf_token": token}
            response = client.post(action, data=data)
            assert response.status_code == 400, action
            assert "Form refused" in response.text
    with engine.connect() as conn:
        assert conn.execute(sa.select(events.c.outcome)).scalar_one() == "unmatched"
        assert conn.execute(sa.select(notifications.c.status)).scalar_one() == "dead"
    assert client.get("/admin/").status_code == 200  # still signed in: logout was refused


def test_the_login_form_needs_its_csrf_token(client: FlaskClient, account: None) -> None:
    client.get("/admin/login")
    response = client.post("/admin/login", data={"email": EMAIL, "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/admin/").status_code == 302


def test_the_webhooks_need_no_csrf_token_and_get_no_cookie(client: FlaskClient) -> None:
    body = encode(job_payload(submission_id="sub_x"))
    response = client.post("/webhooks/ittybit", data=body, headers=signed_headers(body))
    assert response.status_code == 202  # stored as unmatched: no CSRF check stood in the way
    assert "Set-Cookie" not in response.headers
    assert "Set-Cookie" not in client.get("/healthz").headers


def _session_cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie("jobhooks_admin", path="/admin")
    assert cookie is not None
    return cookie.value


def test_a_cookie_signed_with_another_secret_key_is_refused(
    app_config: dict[str, Any], client: FlaskClient, account: None
) -> None:
    other = create_app({**app_config, "SECRET_KEY": "another-deployment-secret-key-0123"})
    try:
        elsewhere = other.test_client()
        assert sign_in(elsewhere).status_code == 302  # the same account, the same database
        assert elsewhere.get("/admin/").status_code == 200
        client.set_cookie("jobhooks_admin", _session_cookie(elsewhere), path="/admin")
        response = client.get("/admin/")
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/admin/login")
    finally:
        get_engine(other).dispose()


def test_a_cookie_signed_with_an_older_key_still_opens_the_session(
    app_config: dict[str, Any], account: None
) -> None:
    older = create_app({**app_config, "SECRET_KEY": "the-key-before-rotation-0123456"})
    rotated = create_app(
        {
            **app_config,
            "SECRET_KEY": "the-key-after-rotation-01234567,the-key-before-rotation-0123456",
        }
    )
    try:
        before = older.test_client()
        sign_in(before)
        after = rotated.test_client()
        after.set_cookie("jobhooks_admin", _session_cookie(before), path="/admin")
        assert after.get("/admin/").status_code == 200
    finally:
        get_engine(older).dispose()
        get_engine(rotated).dispose()


def test_the_session_ends_after_admin_session_idle_without_a_request(
    app_config: dict[str, Any], account: None
) -> None:
    app = create_app({**app_config, "ADMIN_SESSION_IDLE": "30m"})
    try:
        client = app.test_client()
        with freeze_time(NOW) as clock:
            sign_in(client)
            clock.tick(timedelta(minutes=29))
            assert client.get("/admin/").status_code == 200  # a request renews the session
            clock.tick(timedelta(minutes=29))
            assert client.get("/admin/").status_code == 200
            clock.tick(timedelta(minutes=31))
            response = client.get("/admin/")
            assert response.status_code == 302
            assert response.headers["Location"].startswith("/admin/login")
    finally:
        get_engine(app).dispose()


def test_the_session_cookie_is_httponly_lax_secure_and_scoped_to_admin(
    client: FlaskClient, account: None
) -> None:
    response = sign_in(client)
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("jobhooks_admin=")
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/admin", "Secure", "Expires="):
        assert attribute in cookie


def test_the_cookie_is_not_secure_when_public_url_is_plain_http(
    app_config: dict[str, Any], account: None
) -> None:
    app = create_app({**app_config, "PUBLIC_URL": "http://127.0.0.1:8000"})
    try:
        response = sign_in(app.test_client())
        assert "Secure" not in response.headers["Set-Cookie"]
    finally:
        get_engine(app).dispose()


def test_signing_out_ends_the_session_even_for_a_copied_cookie(
    app: Flask, client: FlaskClient, account: None
) -> None:
    sign_in(client)
    copied = app.test_client()
    copied.set_cookie("jobhooks_admin", _session_cookie(client), path="/admin")
    assert copied.get("/admin/").status_code == 200
    response = post_form(client, "/admin/", "/admin/logout")
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/login"
    assert client.get("/admin/").status_code == 302
    assert copied.get("/admin/").status_code == 302


def test_a_deleted_account_is_signed_out_at_once(
    client: FlaskClient, account: None, engine: Engine
) -> None:
    sign_in(client)
    delete_admin(engine, EMAIL)
    create_admin(engine, EMAIL, PASSWORD, now=utcnow())  # same email, a new account
    assert client.get("/admin/").status_code == 302


def test_every_admin_answer_carries_the_security_headers(
    client: FlaskClient, account: None
) -> None:
    answers = [client.get("/admin/login"), client.get("/admin/"), client.get("/admin/nowhere")]
    static = client.get("/admin/static/admin.css")
    static.close()  # a file response: its file is closed with it
    answers.append(static)
    sign_in(client)
    answers += [client.get("/admin/"), client.get("/admin/deliveries/999")]
    answers.append(client.post("/admin/actions/replay", data={"event_id": "1"}))  # no token
    assert [answer.status_code for answer in answers] == [200, 302, 404, 200, 200, 404, 400]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "script-src" not in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp


def test_pages_carry_no_inline_script_or_style(client: FlaskClient, account: None) -> None:
    sign_in(client)
    for url in ("/admin/login", "/admin/", "/admin/submissions", "/admin/deliveries"):
        html = client.get(url).text
        assert "<script" not in html
        assert " style=" not in html and "<style" not in html


def test_csrf_token_of_one_session_does_not_work_in_another(
    app: Flask, client: FlaskClient, account: None, engine: Engine
) -> None:
    event_id = add_event(engine, "u1", at=utcnow(), outcome="unmatched", submission_id="sub_1")
    sign_in(client)
    token = csrf_token(client.get("/admin/").text)
    other = app.test_client()
    sign_in(other)
    response = other.post("/admin/actions/replay", data={"event_id": event_id, "csrf_token": token})
    assert response.status_code == 400


def test_only_admin_paths_open_a_session(app: Flask) -> None:
    """Webhooks, the API and probes never spend time on, or read, the admin's cookie."""
    from flask import session

    for path, null in (("/webhooks/ittybit", True), ("/healthz", True), ("/admin/", False)):
        with app.test_request_context(path):
            assert app.session_interface.is_null_session(session) is null, path


def test_the_remember_cookie_hook_runs_under_admin_alone(
    app_config: dict[str, Any], account: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flask-Login's after-request hook still clears a remember cookie on signing out, and
    costs the webhooks, the API and the probes nothing."""
    from flask import request
    from flask_login import LoginManager

    seen: list[str] = []
    original = LoginManager._update_remember_cookie

    def spy(self: LoginManager, response: Any) -> Any:
        seen.append(request.path)
        return original(self, response)

    monkeypatch.setattr(LoginManager, "_update_remember_cookie", spy)
    app = create_app(app_config)
    try:
        client = app.test_client()
        assert client.get("/healthz").status_code == 200
        body = encode(job_payload(submission_id="sub_x"))
        response = client.post("/webhooks/ittybit", data=body, headers=signed_headers(body))
        assert response.status_code == 202
        assert client.get("/api/v1/submissions").status_code == 401
        assert seen == []
        sign_in(client)
        client.set_cookie("remember_token", "left-by-an-older-version")
        response = post_form(client, "/admin/", "/admin/logout")
        cleared = [c for c in response.headers.getlist("Set-Cookie") if "remember_token=" in c]
        assert cleared and "remember_token=;" in cleared[0]
        assert seen and all(path.startswith("/admin") for path in seen)
    finally:
        get_engine(app).dispose()


# --- throttle, lock-out by address, the session's sign-in and absolute lifetime -------------


def sign_in_from(client: FlaskClient, address: str, password: str = PASSWORD) -> Any:
    """Sign in as a browser at ``address`` would, behind the router (X-Forwarded-For)."""
    forwarded = {"X-Forwarded-For": f"198.51.100.66, {address}"}  # the client's own claim first
    page = client.get("/admin/login", headers=forwarded)
    return client.post(
        "/admin/login",
        headers=forwarded,
        data={"email": EMAIL, "password": password, "csrf_token": csrf_token(page.text)},
    )


@pytest.mark.slow
def test_an_address_gets_ten_attempts_a_minute_before_any_hash_is_computed(
    client: FlaskClient, account: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from receiver.flows import admin_accounts

    hashed = []
    real = admin_accounts.check_password_hash
    monkeypatch.setattr(
        admin_accounts, "check_password_hash", lambda *args: hashed.append(1) or real(*args)
    )
    with freeze_time(NOW) as clock:
        for attempt in range(10):
            assert sign_in_from(client, "203.0.113.7", f"wrong {attempt}").status_code == 401
            clock.tick(timedelta(seconds=3))
        assert len(hashed) == 10
        refused = sign_in_from(client, "203.0.113.7")  # the right password, even
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "30"  # the first attempt leaves the minute
        assert "Too many attempts" in refused.text
        assert len(hashed) == 10
        assert sign_in_from(client, "203.0.113.8").status_code == 302  # another address
        client.post("/admin/logout", data={"csrf_token": csrf_token(client.get("/admin/").text)})
        clock.tick(timedelta(seconds=31))
        assert sign_in_from(client, "203.0.113.7", "wrong again").status_code == 401


def test_a_lock_out_holds_for_the_guessing_address_alone(
    client: FlaskClient, account: None
) -> None:
    with freeze_time(NOW) as clock:
        for attempt in range(LOCKOUT_FAILURES):
            assert sign_in_from(client, "203.0.113.7", f"wrong {attempt}").status_code == 401
            clock.tick(timedelta(seconds=30))
        assert sign_in_from(client, "203.0.113.7").status_code == 401  # locked out
        # The owner, elsewhere, still gets in with the right password.
        assert sign_in_from(client, "192.0.2.10").status_code == 302
        assert client.get("/admin/").status_code == 200


def test_signing_in_starts_a_new_session_with_a_new_csrf_token(
    client: FlaskClient, account: None, engine: Engine
) -> None:
    dead = add_notification(engine, "msg_dead", at=utcnow(), status="dead")
    before = csrf_token(client.get("/admin/login").text)
    with client.session_transaction("/admin/login") as session:
        session["planted"] = "by someone else"
    assert sign_in(client).status_code == 302
    with client.session_transaction("/admin/login") as session:
        assert "planted" not in session
    # A token from before the sign-in (one an attacker could have planted) is refused.
    response = client.post(
        "/admin/actions/retry-notification",
        data={"notification_id": dead, "csrf_token": before},
    )
    assert response.status_code == 400
    with engine.connect() as conn:
        assert conn.execute(sa.select(notifications.c.status)).scalar_one() == "dead"
    after = csrf_token(client.get("/admin/").text)
    assert after != before


def test_the_session_ends_after_admin_session_max_however_busy(
    app_config: dict[str, Any], account: None
) -> None:
    app = create_app({**app_config, "ADMIN_SESSION_IDLE": "2h", "ADMIN_SESSION_MAX": "12h"})
    try:
        client = app.test_client()
        with freeze_time(NOW) as clock:
            sign_in(client)
            for _ in range(11):
                clock.tick(timedelta(hours=1))
                assert client.get("/admin/").status_code == 200
            clock.tick(timedelta(minutes=59, seconds=59))
            assert client.get("/admin/").status_code == 200
            clock.tick(timedelta(seconds=2))
            response = client.get("/admin/")
            assert response.status_code == 302
            assert response.headers["Location"].startswith("/admin/login")
            assert client.get("/admin/").status_code == 302  # signed out, not just redirected
    finally:
        get_engine(app).dispose()
