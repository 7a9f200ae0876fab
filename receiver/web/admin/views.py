"""The admin pages and actions. Pages read through the read engine; actions are POSTs that
call the same functions as the command line and report on the next page."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import login_user, logout_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired, Length

from config.settings import Settings
from receiver.flows.admin_accounts import admit_attempt, authenticate, end_sessions
from receiver.flows.endpoints import endpoint_json, list_endpoints
from receiver.flows.history import (
    TIMELINE_KINDS,
    TimelineKey,
    get_event,
    parse_since,
    timeline_page,
)
from receiver.flows.outbox import (
    endpoint_label,
    get_outbox,
    latest_attempts,
    retry_notifications,
)
from receiver.flows.records import webhook_url
from receiver.flows.replay import ReplayError, replay_one
from receiver.store.engines import get_engine, get_read_engine
from receiver.store.models import NotificationStatus, Outcome, Status, utcnow
from receiver.web.admin import display, queries
from receiver.web.admin.auth import (
    SIGNED_IN_AT,
    AdminSession,
    client_ip,
    current_admin,
    guard,
    safe_next,
)
from receiver.web.ittybit import NoRealJob, NoSlotFree, ask_now, no_job_advice

__all__ = ["bp"]

bp = Blueprint("admin", __name__, template_folder="templates", static_folder="static")
bp.before_request(guard)
display.register(bp)

_STATUSES = [status.value for status in Status]
_OUTCOMES = [outcome.value for outcome in Outcome]
_SOURCES = ["url", "endpoint", "events"]
_NOTIFICATION_STATUSES = [status.value for status in NotificationStatus]


def _settings() -> Settings:
    settings: Settings = current_app.extensions["jobhooks.settings"]
    return settings


@bp.app_context_processor
def _admin_context() -> dict[str, Any]:
    return {"admin": current_admin() if request.blueprint == "admin" else None}


# --- errors -------------------------------------------------------------------------------


@bp.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError) -> ResponseReturnValue:
    message = (
        "This form could not be accepted: it was not sent from this site, or the page was "
        "open from before your last sign-in. Reload the page and try again."
    )
    return render_template("admin/error.html", title="Form refused", message=message), 400


@bp.errorhandler(400)
def _bad_request(exc: HTTPException) -> ResponseReturnValue:
    message = exc.description or "This request could not be read."
    return render_template("admin/error.html", title="Bad request", message=message), 400


@bp.errorhandler(404)
def _not_found(exc: HTTPException) -> ResponseReturnValue:
    message = exc.description or "There is nothing here."
    return render_template("admin/error.html", title="Not found", message=message), 404


# --- signing in and out -------------------------------------------------------------------


class LoginForm(FlaskForm):  # type: ignore[misc]
    """The login form: email and password, with its CSRF token."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    """Show the login form; sign in with the right password on an unlocked account."""
    form = LoginForm()
    target = safe_next(request.args.get("next"))
    if request.method == "POST":
        # Before any password hash is computed: each costs 32 MiB and tens of milliseconds.
        wait = admit_attempt(get_engine(), client_ip(), now=utcnow())
        if wait is not None:
            flash("Too many attempts from your address: wait a minute and try again.", "error")
            page = render_template("admin/login.html", form=form, next=target)
            return page, 429, {"Retry-After": str(int(wait))}
    if form.validate_on_submit():
        admin = authenticate(
            get_engine(),
            form.email.data or "",
            form.password.data or "",
            now=utcnow(),
            client_ip=client_ip(),
        )
        if admin is not None:
            # Nothing from before the sign-in carries over, the CSRF token least of all: a
            # token someone planted before then is worthless after.
            session.clear()
            g.pop("csrf_token", None)
            login_user(AdminSession(admin))
            session[SIGNED_IN_AT] = time.time()
            # Permanent: the cookie then expires, and is refused, after ADMIN_SESSION_IDLE.
            session.permanent = True
            return redirect(target or url_for("admin.overview"))
        # One answer for every refusal: unknown email, wrong password or locked account.
        flash("Wrong email or password, or too many attempts: try again later.", "error")
        return render_template("admin/login.html", form=form, next=target), 401
    status = 400 if request.method == "POST" else 200
    return render_template("admin/login.html", form=form, next=target), status


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """Sign out, ending the account's sessions everywhere (a copied cookie too)."""
    admin = current_admin()
    if admin is not None:
        end_sessions(get_engine(), admin.id)
    logout_user()
    flash("Signed out.", "info")
    return redirect(url_for("admin.login"))


# --- pages --------------------------------------------------------------------------------


@bp.get("/")
def overview() -> ResponseReturnValue:
    """Show the numbers that say whether all is well."""
    settings = _settings()
    with get_read_engine().connect() as conn:
        numbers = queries.overview(conn, now=utcnow(), stuck_after=settings.stuck_after)
        endpoints = [endpoint_json(row) for row in list_endpoints(conn)]
    # A banner for every endpoint that is failing or disabled: the people on call see it.
    troubled = [
        {**e, "label": endpoint_label(e["url"])}
        for e in endpoints
        if e["status"] != "active" or e["failing_since"]
    ]
    return render_template(
        "admin/overview.html",
        numbers=numbers,
        notify_on=bool(settings.notify_urls) or bool(endpoints),
        troubled=troubled,
    )


def _arg(name: str, choices: list[str] | None = None) -> str:
    value = request.args.get(name, "").strip()[:200]
    if choices is not None and value not in choices:
        return ""
    return value


@bp.get("/submissions")
def submissions() -> ResponseReturnValue:
    """List submissions, filtered, the most recently changed first."""
    meta = _arg("meta")
    meta_key, _, meta_value = meta.partition("=")
    filters = queries.SubmissionFilter(
        status=_arg("status", _STATUSES),
        user_id=_arg("user"),
        meta_key=meta_key.strip(),
        meta_value=meta_value.strip(),
        search=_arg("q"),
    )
    return render_template(
        "admin/submissions.html",
        **_listed(queries.list_submissions, filters),
        meta=meta,
        scan_limit=queries.SCAN_LIMIT,
        statuses=_STATUSES,
    )


#: Timeline entries one submission page shows.
TIMELINE_PAGE = 100
#: A notification's latest attempts the submission page shows (the CLI and the API: all).
ATTEMPTS_SHOWN = 10
#: The characters of each attempt's answer shown (the answer keeps its first kilobyte).
ANSWER_SHOWN = 120


@bp.get("/submissions/<path:submission_id>")
def submission(submission_id: str) -> ResponseReturnValue:
    """Show one submission and everything that happened to it."""
    with get_read_engine().connect() as conn:
        row = queries.get_submission_row(conn, submission_id)
        if row is None:
            abort(404, f"No submission {submission_id!r}.")
        timeline, following = timeline_page(
            conn, submission_id, after=_timeline_after(), limit=TIMELINE_PAGE
        )
        notified = [entry["id"] for entry in timeline if entry["kind"] == "notification"]
        # One more character than shown: the page can tell that the answer went on.
        attempts = latest_attempts(conn, notified, last=ATTEMPTS_SHOWN, chars=ANSWER_SHOWN + 1)
    url = webhook_url(_settings(), submission_id=row["submission_id"], user_id=row["user_id"])
    later = None
    if following is not None:
        moment, rank, last_id = following
        later = url_for(
            "admin.submission",
            submission_id=submission_id,
            after=f"{moment.astimezone(UTC).isoformat()}_{rank}_{last_id}",
        )
    return render_template(
        "admin/submission.html",
        row=row,
        timeline=timeline,
        later_url=later,
        earliest_url=url_for("admin.submission", submission_id=submission_id),
        webhook_url=display.redact(url),
        headers_of=display.shown_headers,
        here=request.path,
        attempts=attempts,
        attempts_shown=ATTEMPTS_SHOWN,
        answer_shown=ANSWER_SHOWN,
    )


def _timeline_after() -> TimelineKey | None:
    """Return where the timeline page starts (``after=TIME_KIND_ID``), or None."""
    parts = queries.read_cursor(request.args.get("after"), numbers=2)
    if parts is None:
        return None
    moment, (rank, number) = parts
    return (moment, rank, number) if rank < len(TIMELINE_KINDS) else None


@bp.get("/deliveries")
def deliveries() -> ResponseReturnValue:
    """List stored deliveries, the newest first."""
    now = utcnow()
    since = _time_arg("since", now)
    until = _time_arg("until", now)
    filters = queries.DeliveryFilter(
        outcome=_arg("outcome", _OUTCOMES),
        source=_arg("source", _SOURCES),
        since=since,
        until=until,
        search=_arg("q"),
    )
    return render_template(
        "admin/deliveries.html",
        **_listed(queries.list_deliveries, filters),
        outcomes=_OUTCOMES,
        sources=_SOURCES,
        since=_arg("since"),
        until=_arg("until"),
    )


def _time_arg(name: str, now: datetime) -> datetime | None:
    text = _arg(name)
    if not text:
        return None
    try:
        return parse_since(text, now=now)
    except ValueError:
        flash(f"{name}: {text!r} is neither a duration (30m, 2h, 7d) nor an ISO time.", "error")
        return None


@bp.get("/deliveries/<int:event_id>")
def delivery(event_id: int) -> ResponseReturnValue:
    """Show one stored delivery: its body pretty-printed, its headers without signatures."""
    with get_read_engine().connect() as conn:
        event = get_event(conn, event_id)
    if event is None:
        abort(404, f"No delivery {event_id}.")
    return render_template(
        "admin/delivery.html",
        event=event,
        body=display.pretty_body(event["body"]),
        headers=display.shown_headers(event["headers"]),
        here=request.path,
    )


@bp.get("/notifications")
def notifications() -> ResponseReturnValue:
    """List notifications to the application, the newest first."""
    filters = queries.NotificationFilter(
        status=_arg("status", _NOTIFICATION_STATUSES), submission_id=_arg("submission")
    )
    return render_template(
        "admin/notifications.html",
        **_listed(queries.list_notifications, filters),
        statuses=_NOTIFICATION_STATUSES,
        here=request.full_path.rstrip("?"),
        notify_on=bool(_settings().notify_urls),
    )


def _listed(lister: Callable[..., queries.Page], filters: Any) -> dict[str, Any]:
    """Read the page that ``after`` names: the page, its filters and its URLs, for a template."""
    after = queries.Cursor.decode(request.args.get("after"))
    with get_read_engine().connect() as conn:
        page = lister(conn, filters, after=after)
    return {"page": page, "filters": filters, **_page_urls(page)}


def _page_urls(page: queries.Page) -> dict[str, str | None]:
    """Return the URLs of the first and the next page, with the same filters."""
    assert request.endpoint is not None
    args: dict[str, Any] = request.args.to_dict()
    args.pop("after", None)
    first = url_for(request.endpoint, **args)
    if page.next is None:
        return {"first_url": first, "next_url": None}
    after = page.next.encode()
    return {"first_url": first, "next_url": url_for(request.endpoint, **args, after=after)}


# --- actions: POST + CSRF (checked by auth.guard), the result flashed on the next page ------


def _back(default: str) -> ResponseReturnValue:
    return redirect(safe_next(request.form.get("next")) or default)


def _form_number(name: str, missing: str) -> int:
    """Return the form's whole number ``name``; answer 404 saying ``missing`` if it is not one."""
    try:
        return int(request.form.get(name, ""))
    except ValueError:
        abort(404, missing)


@bp.post("/actions/reconcile")
def reconcile_submission() -> ResponseReturnValue:
    """Ask ittybit about one submission's job now, as ``reconcile --submission`` does."""
    settings = _settings()
    submission_id = request.form.get("submission_id", "").strip()
    if not submission_id:
        abort(404, "No submission named.")
    page = url_for("admin.submission", submission_id=submission_id)
    if not settings.ittybit_api_key:
        flash("Cannot ask ittybit: ITTYBIT_API_KEY is not set for the web process.", "error")
        return _back(page)
    try:
        done = ask_now(submission_id, source="admin")
    except NoSlotFree:
        text = "Did not ask ittybit: every slot for waiting on it is taken (webhooks first)."
        flash(text + " Try again in a moment.", "error")
        return _back(page)
    except NoRealJob:
        flash(f"{submission_id} is a test submission: it has no real ittybit job.", "error")
        return _back(page)
    except LookupError:
        abort(404, f"No submission {submission_id!r}.")
    if done is None:
        flash(f"{submission_id} has no ittybit job: {no_job_advice(submission_id)}.", "error")
    else:
        result, detail = done
        text = f"Asked ittybit about {submission_id}: {result.value}"
        flash(text + (f" ({display.redact(detail)})" if detail else ""), "ok")
    return _back(page)


@bp.post("/actions/replay")
def replay_delivery() -> ResponseReturnValue:
    """Apply one stored delivery again, as ``events replay ID`` does."""
    event_id = _form_number("event_id", "No such delivery.")
    page = url_for("admin.delivery", event_id=event_id)
    try:
        result = replay_one(
            get_engine(), event_id, now=utcnow(), outbox=get_outbox(), dry_run=False
        )
    except ReplayError as exc:
        flash(f"Replay refused: {display.redact(exc)}", "error")
        return _back(page)
    if result.outcome == result.previous and not result.changed:
        what = f"still {result.outcome}"
    else:
        what = f"was {result.previous}, now {result.outcome}"
    where = f" ({result.submission_id}: {result.status})" if result.submission_id else ""
    reason = f": {display.redact(result.reason)}" if result.reason else ""
    flash(f"Delivery {event_id} replayed, {what}{where}{reason}", "ok")
    return _back(page)


@bp.post("/actions/retry-notification")
def retry_notification() -> ResponseReturnValue:
    """Send one notification (pending or dead) again from now on, through the outbox."""
    notification_id = _form_number("notification_id", "No such notification.")
    with get_engine().begin() as conn:
        count = retry_notifications(conn, [notification_id], now=utcnow())
    if count:
        flash(f"Notification {notification_id} will be sent again now.", "ok")
    else:
        flash(
            f"Notification {notification_id} was not retried: it was delivered, or is gone.",
            "error",
        )
    return _back(url_for("admin.notifications"))
