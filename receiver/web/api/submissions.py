"""``/api/v1/submissions``: create, register, read, list, history and reconcile."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Response, jsonify, request
from spectree import Response as Documented
from sqlmodel import Session

from receiver.flows.history import TIMELINE_KINDS, timeline_page
from receiver.flows.outbox import get_outbox
from receiver.flows.polling import JobResult
from receiver.flows.records import (
    InvalidSubmission,
    create_submission,
    get_submission,
    submission_json,
    validate_submission,
)
from receiver.flows.replay import rematch_for
from receiver.flows.submit import RESERVED_METADATA, refused, request_job, submit_job
from receiver.observe.logs import note
from receiver.store.engines import get_engine, get_read_engine
from receiver.store.models import Submission, utcnow
from receiver.web.api import idempotency
from receiver.web.api.auth import current_key, read_connection
from receiver.web.api.blueprint import bp
from receiver.web.api.client import api_client, settings
from receiver.web.api.errors import ApiProblem, json_body
from receiver.web.api.listing import (
    get_submission_object,
    list_submissions_page,
    public_endpoint,
)
from receiver.web.api.pagination import decode_cursor, decode_timeline_cursor, encode_cursor
from receiver.web.api.schemas import (
    CreateHeaders,
    CreateSubmissionBody,
    ErrorBody,
    EventList,
    EventsQuery,
    ListQuery,
    RegisterSubmissionBody,
    SubmissionBody,
    SubmissionList,
)
from receiver.web.api.spec import spec
from receiver.web.ittybit import NoSlotFree, ask_now, no_job_advice
from receiver.web.slots import ittybit_slot

__all__ = [
    "create_submission_view",
    "get_submission_view",
    "list_submissions_view",
    "reconcile_submission_view",
    "register_submission_view",
    "submission_events_view",
]

_TAGS = ["submissions"]
_submissions = Submission.__table__  # type: ignore[attr-defined]


def _context() -> Any:
    """Return what spectree validated for this request (query, json, headers)."""
    return getattr(request, "context")  # noqa: B009 (set by spectree, unknown to mypy)


def _answer(submission: Any, status: int = 200) -> Response:
    response = jsonify(submission_json(submission))
    response.status_code = status
    if status == 201:
        response.headers["Location"] = f"{bp.url_prefix}/submissions/{submission.submission_id}"
    return response


def _not_found(submission_id: str) -> ApiProblem:
    return ApiProblem(404, "not_found", f"no submission {submission_id!r}")


def _clean(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return validated columns, or answer 422 naming the field."""
    try:
        return validate_submission(record)
    except InvalidSubmission as exc:
        raise ApiProblem(422, "validation_error", str(exc), field=exc.field) from None


def _load(submission_id: str) -> Submission | None:
    with Session(get_read_engine()) as session:
        return get_submission(session, submission_id)


def _difference(existing: Submission, wanted: Mapping[str, Any]) -> str | None:
    """Return the first field where ``existing`` differs from what is asked, if any."""
    for name, value in wanted.items():
        column = "meta" if name == "metadata" else name
        if getattr(existing, column) != value:
            return name
    return None


def _conflict(existing: Submission, field: str) -> ApiProblem:
    what = "another owner" if field == "user_id" else f"another {field}"
    message = f"submission {existing.submission_id!r} exists with {what}"
    return ApiProblem(409, "conflict", message, field=field)


@bp.post("/submissions")
@json_body(CreateSubmissionBody)
@spec.validate(
    json=CreateSubmissionBody,
    headers=CreateHeaders,
    resp=Documented(
        HTTP_200=(SubmissionBody, "It existed already with the same data, and its job."),
        HTTP_201=(SubmissionBody, "Stored, and its ittybit job created now."),
        HTTP_202=(SubmissionBody, "Stored as pending: ittybit was not reached in time."),
        HTTP_400=ErrorBody,
        HTTP_401=ErrorBody,
        HTTP_409=(ErrorBody, "It exists with other data, or its Idempotency-Key is busy."),
        HTTP_415=ErrorBody,
        HTTP_422=(ErrorBody, "Invalid, reserved metadata, a reused key, or refused by ittybit."),
        HTTP_503=ErrorBody,
    ),
    tags=_TAGS,
)
def create_submission_view() -> Response:
    """Store a submission and create its ittybit job.

    201 when the job was created; 202 when ittybit did not answer in time (or answered
    5xx or 429), or when as many requests as may wait on ittybit already do: the
    submission is stored as pending and the worker creates its job later, with the same
    idempotency key, so never twice. An `Idempotency-Key` header makes a retry answer the
    first answer again.
    """
    context = _context()
    body: CreateSubmissionBody = context.json
    key = context.headers.idempotency_key
    if key is None:
        return _create(body)
    engine = get_engine()
    now = utcnow()
    owned = idempotency.claim(
        engine,
        api_key_id=current_key().id,
        key=key,
        fingerprint=idempotency.request_hash("POST", request.path, body.model_dump(mode="json")),
        now=now,
        wait=settings().api_ittybit_budget,
    )
    if isinstance(owned, Response):
        note(idempotent_replay=True)
        return owned
    try:
        response = _create(body)
    except ApiProblem as problem:
        response = problem.response()
    except BaseException:
        idempotency.release(engine, owned)
        raise
    idempotency.finish(engine, owned, response, now=now)
    return response


def _create(body: CreateSubmissionBody) -> Response:
    clean = _clean(
        {
            "submission_id": body.submission_id,
            "user_id": body.user_id,
            "input_url": body.input_url,
            "metadata": body.metadata,
        }
    )
    reserved = sorted(RESERVED_METADATA & set(body.metadata))
    if reserved:
        message = f"metadata {reserved[0]} is set by the service"
        raise ApiProblem(422, "validation_error", message, field=f"metadata.{reserved[0]}")
    submission_id = clean["submission_id"]
    note(submission_id=submission_id)
    wanted = {
        "user_id": clean["user_id"],
        "input_url": clean["input_url"],
        "metadata": body.metadata,
        "job_kind": body.kind,
        "job_options": body.options or None,
    }
    existing = _load(submission_id)
    if existing is not None:
        differs = _difference(existing, wanted)
        if differs is not None:
            raise _conflict(existing, differs.removeprefix("job_"))
    client = api_client()
    config = settings()
    job = {
        "submission_id": submission_id,
        "user_id": clean["user_id"],
        "input_url": clean["input_url"],
        "now": utcnow(),
        "kind": body.kind,
        "options": body.options,
        "metadata": body.metadata,
    }
    try:
        with ittybit_slot(config) as free:
            if free:
                result = submit_job(get_engine(), client, config, outbox=get_outbox(), **job)
            else:
                # Every slot waits on ittybit already: the worker creates this job.
                note(ittybit_busy=True)
                result = request_job(get_engine(), **job)
    except InvalidSubmission as exc:  # a concurrent request stored other data first
        raise ApiProblem(409, "conflict", str(exc)) from None
    submission = result.submission
    if result.api_error is not None and refused(result.api_error):
        message = f"ittybit refused the job: {result.error}"
        raise ApiProblem(422, "job_refused", message)
    if submission.job_id is None:
        note(pending=True)
        return _answer(submission, 202)
    # 201 when this request had ittybit make the job; 200 when it was there already.
    return _answer(submission, 201 if result.sent else 200)


@bp.put("/submissions/<submission_id>")
@json_body(RegisterSubmissionBody)
@spec.validate(
    json=RegisterSubmissionBody,
    resp=Documented(
        HTTP_200=(SubmissionBody, "Registered before with the same data: nothing changed."),
        HTTP_201=(SubmissionBody, "Registered; stored deliveries for it were matched."),
        HTTP_400=ErrorBody,
        HTTP_401=ErrorBody,
        HTTP_409=(ErrorBody, "It exists with another owner or other data."),
        HTTP_415=ErrorBody,
        HTTP_422=ErrorBody,
    ),
    tags=_TAGS,
)
def register_submission_view(submission_id: str) -> Response:
    """Register a submission whose ittybit job the application created itself.

    Its webhooks then match instead of waiting as unmatched, and those already stored
    for its job or id are matched at once. The same body again changes nothing.
    """
    body: RegisterSubmissionBody = _context().json
    clean = _clean(
        {
            "submission_id": submission_id,
            "user_id": body.user_id,
            "input_url": body.input_url,
            "job_id": body.job_id,
            "metadata": body.metadata,
        }
    )
    note(submission_id=clean["submission_id"])
    wanted = {
        "user_id": clean["user_id"],
        "input_url": clean["input_url"],
        "job_id": clean["job_id"],
        "metadata": clean["meta"],
    }
    existing = _load(clean["submission_id"])
    if existing is None:
        try:
            with Session(get_engine()) as session:
                create_submission(
                    session,
                    submission_id=clean["submission_id"],
                    user_id=clean["user_id"],
                    input_url=clean["input_url"],
                    job_id=clean["job_id"],
                    metadata=clean["meta"],
                )
        except InvalidSubmission:
            existing = _load(clean["submission_id"])
            if existing is None:
                message = f"job {clean['job_id']!r} belongs to another submission"
                raise ApiProblem(409, "conflict", message, field="job_id") from None
        else:
            rematch_for(
                get_engine(),
                job_id=clean["job_id"],
                submission_id=clean["submission_id"],
                now=utcnow(),
                outbox=get_outbox(),
            )
            created = _load(clean["submission_id"])
            assert created is not None  # submissions are not deleted by the API
            return _answer(created, 201)
    differs = _difference(existing, wanted)
    if differs is not None:
        raise _conflict(existing, differs)
    return _answer(existing)


@bp.get("/submissions/<submission_id>")
@spec.validate(
    resp=Documented(HTTP_200=SubmissionBody, HTTP_401=ErrorBody, HTTP_404=ErrorBody),
    validation_error_status=400,
    tags=_TAGS,
)
def get_submission_view(submission_id: str) -> Response:
    """Return a submission, as `jobhooks submissions show` prints it."""
    # One hot statement: the ORM session cost as much as the rest of the request.
    found = get_submission_object(read_connection(), submission_id)
    if found is None:
        raise _not_found(submission_id)
    return jsonify(found)


@bp.get("/submissions")
@spec.validate(
    query=ListQuery,
    resp=Documented(HTTP_200=SubmissionList, HTTP_400=ErrorBody, HTTP_401=ErrorBody),
    validation_error_status=400,
    tags=_TAGS,
)
def list_submissions_view() -> Response:
    """List submissions, newest change first, a page at a time.

    Filters: `status`, `user_id`, `updated_after`, and `meta.KEY=VALUE` (repeatable) on a
    metadata key. Pass `next_cursor` as `cursor` for the next page. A row changed while
    you page moves to the front: it is not seen twice, and a walk that starts again with
    `updated_after` set to when the last one started sees it.
    """
    query: ListQuery = _context().query
    after = None
    if query.cursor is not None:
        moment, last_id = decode_cursor(query.cursor, with_time=True)
        assert moment is not None
        after = (moment, last_id)
    objects, following = list_submissions_page(
        read_connection(),
        limit=query.limit,
        after=after,
        status=query.status,
        user_id=query.user_id,
        updated_after=query.updated_after,
        meta=query.meta_filters(),
    )
    return jsonify(
        data=objects,
        next_cursor=None if following is None else encode_cursor(*following),
    )


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


@bp.get("/submissions/<submission_id>/events")
@spec.validate(
    query=EventsQuery,
    resp=Documented(HTTP_200=EventList, HTTP_400=ErrorBody, HTTP_401=ErrorBody, HTTP_404=ErrorBody),
    validation_error_status=400,
    tags=_TAGS,
)
def submission_events_view(submission_id: str) -> Response:
    """Return the deliveries, polls and notifications of a submission, oldest first.

    Deliveries carry their outcome and reason and the headers kept (never a signature or
    a webhook URL's token); polls say who asked and what came of it. A page holds at most
    `limit` (default 100); pass `next_cursor` as `cursor` for the next page.
    """
    query: EventsQuery = _context().query
    after = None
    if query.cursor is not None:
        after = decode_timeline_cursor(query.cursor, kinds=len(TIMELINE_KINDS))
    conn = read_connection()
    found = conn.execute(
        sa.select(_submissions.c.id).where(_submissions.c.submission_id == submission_id)
    ).first()
    if found is None:
        raise _not_found(submission_id)
    entries, following = timeline_page(conn, submission_id, after=after, limit=query.limit)
    data = []
    for entry in entries:
        shown = {name: _plain(value) for name, value in entry.items()}
        if "endpoint" in shown:
            shown["endpoint"] = public_endpoint(shown["endpoint"])
        data.append(shown)
    return jsonify(data=data, next_cursor=None if following is None else encode_cursor(*following))


@bp.post("/submissions/<submission_id>/reconcile")
@spec.validate(
    resp=Documented(
        HTTP_200=(SubmissionBody, "The submission after what ittybit said was applied."),
        HTTP_401=ErrorBody,
        HTTP_404=ErrorBody,
        HTTP_409=(ErrorBody, "It has no ittybit job yet, or is a test submission."),
        HTTP_502=(ErrorBody, "ittybit answered with an error."),
        HTTP_503=ErrorBody,
        HTTP_504=(ErrorBody, "ittybit did not answer within API_ITTYBIT_BUDGET."),
    ),
    validation_error_status=400,
    tags=_TAGS,
)
def reconcile_submission_view(submission_id: str) -> Response:
    """Ask ittybit for the submission's job now and apply it, as a webhook would be."""
    note(submission_id=submission_id)
    existing = _load(submission_id)
    if existing is None:
        raise _not_found(submission_id)
    if existing.is_test:
        message = "a test submission has no real ittybit job to ask about"
        raise ApiProblem(409, "test_submission", message)
    api_client()  # 503 at once when the web process has no ittybit API key
    try:
        outcome = ask_now(submission_id, source="api")
    except NoSlotFree:
        message = "every slot for waiting on ittybit is taken; retry in a moment"
        raise ApiProblem(503, "ittybit_busy", message, headers={"Retry-After": "1"}) from None
    except LookupError:
        raise _not_found(submission_id) from None
    if outcome is None:
        message = f"submission {submission_id!r} has no ittybit job: {no_job_advice(submission_id)}"
        raise ApiProblem(409, "no_job", message)
    result, detail = outcome
    note(result=result.value)
    if result in (JobResult.ERROR, JobResult.DEFERRED):
        text = detail or "no detail"
        if "budget" in text or "timed out" in text:
            raise ApiProblem(504, "ittybit_timeout", f"ittybit did not answer in time: {text}")
        raise ApiProblem(502, "ittybit_error", f"ittybit could not answer: {text}")
    submission = _load(submission_id)
    assert submission is not None
    return _answer(submission)
