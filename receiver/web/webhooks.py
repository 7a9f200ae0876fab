"""The webhook endpoints: verify, parse, normalise, then apply in one transaction."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, Request, Response, current_app, request
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from config.settings import Settings
from receiver.core.jobstate import (
    IgnoredEvent,
    InvalidPayload,
    JobState,
    NotAJob,
    normalise,
    parse_json,
)
from receiver.core.signing import (
    HeaderLookup,
    TokenClaims,
    VerificationError,
    verify_standard_webhook,
    verify_webhook_token,
)
from receiver.flows.apply import is_lookup
from receiver.flows.delivery import (
    DeliveryResult,
    claims_conflict,
    over_refusal_cap,
    process_delivery,
)
from receiver.flows.outbox import get_outbox
from receiver.observe.logs import note
from receiver.observe.metrics import get_metrics
from receiver.store.engines import database_unavailable, get_engine
from receiver.store.inbox import Delivery, dedupe_key, record_event, record_rejected
from receiver.store.models import Outcome, utcnow
from receiver.web.errors import error_response
from receiver.web.turns import NO_TURN

__all__ = ["bp"]

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

_STATUS = {
    Outcome.APPLIED: 200,
    Outcome.DUPLICATE: 200,
    Outcome.STALE: 200,
    Outcome.UNMATCHED: 202,
    Outcome.REJECTED: 403,
    Outcome.IGNORED: 200,
}


class _EnvironHeaders:
    """``request.headers.get`` for a delivery's few headers, read from the WSGI environ.

    The same lookup as werkzeug's ``EnvironHeaders.get`` (``webhook-id`` is the environ's
    ``HTTP_WEBHOOK_ID``; Content-Type and -Length have no prefix), without its layers or
    the KeyError it raises and catches for each absent header: a delivery looks up about
    ten (the signature's, the stored safe ones), at 4,000 instructions each that way.
    """

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    def get(self, key: str, /) -> str | None:
        name = key.upper().replace("-", "_")
        if name not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = "HTTP_" + name
        value: str | None = self._environ.get(name)
        return value


def _context() -> tuple[Flask, Request]:
    # Each attribute read through the current_app or request proxy costs 8,000-10,000
    # instructions (werkzeug binds a function per access), and a delivery made about ten:
    # the objects behind them are fetched once and passed along.
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    return app, req


@bp.post("/ittybit/<token>")
def submission_webhook(token: str) -> Response:
    """Receive a delivery on a submission's own signed URL."""
    app, req = _context()
    settings: Settings = app.extensions["jobhooks.settings"]
    body = _read_body(req, settings)
    if isinstance(body, Response):
        return body
    headers = _EnvironHeaders(req.environ)
    try:
        claims = verify_webhook_token(settings.secret_keys, token)
        delivery_id = None
        if settings.webhook_secrets:
            delivery_id = _verify_hmac(headers, settings, body)
    except VerificationError as exc:
        return _unauthorized(exc)
    return _handle(app, headers, body, source="url", claims=claims, delivery_id=delivery_id)


@bp.post("/ittybit")
def project_webhook() -> Response:
    """Receive a delivery on the project-level URL (Standard Webhooks signatures)."""
    app, req = _context()
    settings: Settings = app.extensions["jobhooks.settings"]
    body = _read_body(req, settings)
    if isinstance(body, Response):
        return body
    headers = _EnvironHeaders(req.environ)
    try:
        delivery_id = _verify_hmac(headers, settings, body)
    except VerificationError as exc:
        return _unauthorized(exc)
    return _handle(app, headers, body, source="endpoint", claims=None, delivery_id=delivery_id)


def _read_body(req: Request, settings: Settings) -> bytes | Response:
    """Return the raw body, or the refusal of an oversized body (413) or non-JSON one (415).

    A delivery that did not get its process's turn in time (receiver/web/turns.py) is
    answered 503, as one that waited too long for SQLite's lock is.
    """
    if NO_TURN in req.environ:
        log.warning("database unavailable; delivery not stored: this process's writers are busy")
        return _unavailable()
    length = req.content_length
    if length is not None and length > settings.max_body_bytes:
        return _too_large(settings)
    if req.mimetype != "application/json":
        return error_response(
            415, "unsupported_media_type", "Content-Type must be application/json"
        )
    # Werkzeug stops a stream without Content-Length at the limit without saying so;
    # reading one byte more tells a body of exactly the limit from a longer one.
    req.max_content_length = settings.max_body_bytes + 1
    body = req.get_data(cache=False)
    return _too_large(settings) if len(body) > settings.max_body_bytes else body


def _unavailable() -> Response:
    return error_response(
        503,
        "database_unavailable",
        "the delivery could not be stored; retry later",
        headers={"Retry-After": "5"},
    )


def _too_large(settings: Settings) -> Response:
    return error_response(413, "payload_too_large", f"body exceeds {settings.max_body_bytes} bytes")


def _verify_hmac(headers: HeaderLookup, settings: Settings, body: bytes) -> str:
    return verify_standard_webhook(
        headers,
        body,
        keys=settings.webhook_secrets,
        now=time.time(),
        tolerance=settings.webhook_tolerance,
    )


def _unauthorized(exc: VerificationError) -> Response:
    # The reason is the error code: the request's log line and metrics carry it.
    return error_response(401, exc.reason, exc.message)


def _handle(
    app: Flask,
    headers: HeaderLookup,
    body: bytes,
    *,
    source: str,
    claims: TokenClaims | None,
    delivery_id: str | None,
) -> Response:
    delivery = Delivery(
        source=source,
        body=body.decode("utf-8", errors="replace"),
        headers=headers,
        delivery_id=delivery_id,
        claimed_user_id=claims.user_id if claims else None,
    )
    ignored: IgnoredEvent | None = None
    try:
        state = normalise(parse_json(body))
    except InvalidPayload as exc:
        return error_response(400, "invalid_json", str(exc))
    except IgnoredEvent as exc:
        ignored = exc
    except NotAJob as exc:
        return error_response(422, "not_a_job", str(exc))
    try:
        if ignored is not None:
            return _answer_ignored(app, delivery, ignored)
        result = _store(app, delivery, state, claims)
    except SQLAlchemyError as exc:
        if not database_unavailable(exc):
            raise
        # The driver's own first line says which: locked, full, unreachable, restarting.
        detail = str(getattr(exc, "orig", None) or type(exc).__name__).split("\n", 1)[0][:200]
        log.warning("database unavailable; delivery not stored: %s", detail)
        return _unavailable()
    if not result.stored:
        get_metrics(app).observe_unstored(result.outcome.value)
    note(
        delivery_id=delivery_id or state.event_id,
        job_id=state.job_id,
        submission_id=result.submission_id,
        outcome=result.outcome.value,
        reason=result.reason,
    )
    if result.outcome is Outcome.REJECTED:
        return error_response(403, "rejected", result.reason or "delivery rejected")
    payload: dict[str, str] = {"outcome": result.outcome.value}
    if result.submission_id:
        payload["submission_id"] = result.submission_id
    if result.status:
        payload["status"] = result.status
    # The bytes jsonify would give (sorted, compact, newline), without its per-call set-up.
    text = json.dumps(payload, sort_keys=True, separators=(",", ":")) + "\n"
    return Response(text, status=_STATUS[result.outcome], mimetype="application/json")


def _answer_ignored(app: Flask, delivery: Delivery, event: IgnoredEvent) -> Response:
    """Keep an event of a kind not acted on, and answer 200: a 4xx is retried for days."""
    if event.event_id:
        key = f"evt:{event.event_id}"
    elif delivery.delivery_id:
        key = f"wh:{delivery.delivery_id}"
    else:
        key = "ign:" + hashlib.sha256(delivery.body.encode()).hexdigest()
    with get_engine(app).begin() as conn:
        stored = record_event(
            conn,
            key=key,
            delivery=delivery,
            state=None,
            submission_id=None,
            outcome=Outcome.IGNORED,
            reason=str(event),
            now=utcnow(),
        )
    outcome = Outcome.IGNORED if stored is not None else Outcome.DUPLICATE
    note(delivery_id=delivery.delivery_id or event.event_id, outcome=outcome.value)
    text = json.dumps({"outcome": outcome.value}, sort_keys=True, separators=(",", ":")) + "\n"
    return Response(text, status=200, mimetype="application/json")


def _store(
    app: Flask, delivery: Delivery, state: JobState, claims: TokenClaims | None
) -> DeliveryResult:
    try:
        return _store_once(app, delivery, state, claims)
    except DBAPIError as exc:
        # A pooled connection cut since its last use (a database restart or failover)
        # fails at the first statement, the read that finds the submission: nothing was
        # written, and the connection is discarded. Once more, on a new one. A connection
        # lost later (after a write, or at a read that follows one) answers 503 instead,
        # and ittybit retries.
        if not (exc.connection_invalidated and is_lookup(exc.statement)):
            raise
    return _store_once(app, delivery, state, claims)


def _store_once(
    app: Flask, delivery: Delivery, state: JobState, claims: TokenClaims | None
) -> DeliveryResult:
    now = utcnow()
    outbox = get_outbox(app)
    with get_engine(app).connect() as conn:
        conflict = claims_conflict(claims, state)
        if conflict is None:
            try:
                with conn.begin():
                    return process_delivery(
                        conn,
                        delivery=delivery,
                        state=state,
                        claims=claims,
                        now=now,
                        outbox=outbox,
                        capped=True,
                    )
            except IntegrityError:
                # Filling in the job id collided with the submission that already owns it.
                conflict = "job id belongs to another submission"
        wanted = claims.submission_id if claims else state.meta_str("submission_id")
        with conn.begin():
            if over_refusal_cap(conn, wanted, now):
                return DeliveryResult(Outcome.REJECTED, wanted, reason=conflict, stored=False)
            record_rejected(
                conn,
                key=dedupe_key(
                    delivery.delivery_id, state, named=claims.submission_id if claims else None
                ),
                delivery=delivery,
                state=state,
                submission_id=wanted,
                reason=conflict,
                now=now,
            )
        return DeliveryResult(Outcome.REJECTED, wanted, reason=conflict)
