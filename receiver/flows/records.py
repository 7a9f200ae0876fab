"""Submissions off the hot path: create, read, import, and their signed webhook URLs."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from config.settings import Settings
from receiver.core.fields import InvalidField, check_metadata, check_submission_id
from receiver.core.signing import webhook_token
from receiver.store.models import Notification, Poll, Status, Submission, WebhookEvent, utcnow

__all__ = [
    "TEST_PREFIX",
    "ImportRefused",
    "ImportReport",
    "InvalidSubmission",
    "SkippedRow",
    "create_submission",
    "create_test_submission",
    "get_submission",
    "import_submissions",
    "prune_test_submissions",
    "submission_json",
    "validate_submission",
    "webhook_url",
]

#: Every test submission's id starts with this; no real one may.
TEST_PREFIX = "test_"

_MAX_ID = 200
_STATUSES = tuple(item.value for item in Status)
_IMPORT_KEYS = frozenset({"submission_id", "user_id", "input_url", "job_id", "status", "metadata"})


class InvalidSubmission(ValueError):
    """A submission's fields are missing or malformed; the message says which.

    ``field`` names the field at fault when there is one (the API reports it).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def webhook_url(settings: Settings, *, submission_id: str, user_id: str) -> str:
    """Return the signed per-submission URL ittybit should deliver to."""
    token = webhook_token(settings.secret_keys, submission_id=submission_id, user_id=user_id)
    return f"{settings.public_url}/webhooks/ittybit/{token}"


def submission_json(submission: Any) -> dict[str, Any]:
    """Return a submission (a model or a row) as the JSON object the CLI prints.

    Without its webhook URL: the URL's token is a bearer credential for the submission's
    deliveries, so it goes only where ittybit needs it (the job's ``webhook_url``) and to
    ``jobhooks webhook-url``, never into API objects or notifications.
    """

    def stamp(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "submission_id": submission.submission_id,
        "user_id": submission.user_id,
        "input_url": submission.input_url,
        "job_id": submission.job_id,
        "status": submission.status,
        "provider_status": submission.provider_status,
        "output_url": submission.output_url,
        "error": submission.error,
        "metadata": submission.meta,
        "test": bool(submission.is_test),
        "provider_updated_at": stamp(submission.provider_updated_at),
        "created_at": stamp(submission.created_at),
        "updated_at": stamp(submission.updated_at),
    }


def _identifier(name: str, value: Any, rule: Callable[[str], str] | None = None) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        message = f"{name} is required"
        raise InvalidSubmission(message, field=name)
    text: str = value.strip()
    if rule is not None:
        try:
            return rule(text)
        except InvalidField as exc:
            raise InvalidSubmission(str(exc), field=exc.field) from None
    if len(text) > _MAX_ID or not text.isprintable():
        message = f"{name} must be at most {_MAX_ID} printable characters"
        raise InvalidSubmission(message, field=name)
    return text


def _http_url(text: str) -> bool:
    if "\x00" in text:  # urlsplit keeps it; no database column should
        return False
    try:
        parts = urlsplit(text)
    except ValueError:  # "http://[x": urlsplit cannot read it
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def validate_submission(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return clean column values for one submission record, or raise InvalidSubmission."""
    unknown = set(record) - _IMPORT_KEYS
    if unknown:
        message = f"unknown keys: {', '.join(sorted(unknown))}"
        raise InvalidSubmission(message)
    input_url = record.get("input_url")
    if not isinstance(input_url, str) or len(input_url) > 2048:
        message = "input_url is required"
        raise InvalidSubmission(message, field="input_url")
    if not _http_url(input_url.strip()):
        message = f"input_url must be an http(s) URL, got {input_url[:80]!r}"
        raise InvalidSubmission(message, field="input_url")
    status = record.get("status") or Status.PENDING.value
    if status not in _STATUSES:
        message = f"status must be one of {', '.join(_STATUSES)}"
        raise InvalidSubmission(message, field="status")
    job_id = record.get("job_id")
    submission_id = _identifier("submission_id", record.get("submission_id"), check_submission_id)
    try:
        metadata = check_metadata(record.get("metadata"))
    except InvalidField as exc:
        raise InvalidSubmission(str(exc), field=exc.field) from None
    if submission_id.startswith(TEST_PREFIX):
        message = f"submission_id must not start with {TEST_PREFIX!r}: those are test submissions"
        raise InvalidSubmission(message, field="submission_id")
    return {
        "submission_id": submission_id,
        "user_id": _identifier("user_id", record.get("user_id")),
        "input_url": input_url.strip(),
        "job_id": None if job_id in (None, "") else _identifier("job_id", job_id),
        "status": status,
        "meta": metadata,
    }


def get_submission(session: Session, submission_id: str) -> Submission | None:
    """Return the submission with ``submission_id``, if any."""
    return session.exec(select(Submission).where(Submission.submission_id == submission_id)).first()


def create_submission(
    session: Session, *, job: Mapping[str, Any] | None = None, **fields: Any
) -> Submission:
    """Add a validated submission and commit; raise InvalidSubmission on bad or taken ids.

    ``job`` holds the columns of an asked-for job (``job_kind``, ``job_options``,
    ``job_requested_at``), set by ``submit`` and the API so the worker can create it later.
    """
    values = validate_submission(fields)
    if get_submission(session, values["submission_id"]) is not None:
        message = f"submission {values['submission_id']!r} already exists"
        raise InvalidSubmission(message)
    submission = Submission(**values, **(job or {}))
    session.add(submission)
    try:
        session.commit()
    except sa.exc.IntegrityError:
        session.rollback()
        message = "submission_id or job_id is already taken"
        raise InvalidSubmission(message) from None
    session.refresh(submission)
    return submission


def create_test_submission(session: Session, *, now: datetime) -> Submission:
    """Add a test submission (``test_…``, with a test job id) for ``trigger`` and commit.

    It is marked as test data: the reconciler never polls it, the application is never
    notified about it, and ``submissions prune-tests`` removes it.
    """
    token = secrets.token_hex(6)
    submission = Submission(
        submission_id=f"{TEST_PREFIX}{token}",
        user_id="test",
        input_url="https://example.invalid/jobhooks-trigger.mp4",
        job_id=f"job_test_{token}",
        status=Status.PROCESSING.value,
        meta={"test": True},
        is_test=True,
        created_at=now,
        updated_at=now,
    )
    session.add(submission)
    session.commit()
    session.refresh(submission)
    return submission


def prune_test_submissions(engine: Engine) -> int:
    """Delete every test submission and what was recorded about it; return how many."""
    table = Submission.__table__  # type: ignore[attr-defined]
    tests = sa.select(table.c.submission_id).where(table.c.is_test.is_(True))
    with engine.begin() as conn:
        for model in (WebhookEvent, Poll, Notification):
            other: sa.Table = model.__table__  # type: ignore[union-attr]
            conn.execute(sa.delete(other).where(other.c.submission_id.in_(tests)))
        return int(conn.execute(sa.delete(table).where(table.c.is_test.is_(True))).rowcount)


@dataclass(frozen=True, slots=True)
class SkippedRow:
    """A line of an import that was not written, and why."""

    line: int
    submission_id: str
    reason: str


@dataclass(slots=True)
class ImportReport:
    """How an import went: counts, and every row skipped with its reason."""

    read: int = 0
    inserted: int = 0
    skipped: int = 0
    skips: list[SkippedRow] = field(default_factory=list)


class ImportRefused(InvalidSubmission):
    """A strict import met rows it would skip; nothing was written."""

    def __init__(self, report: ImportReport) -> None:
        super().__init__(f"{report.skipped} row(s) would be skipped")
        self.report = report


def _parse_lines(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            message = f"line {number}: not JSON ({exc})"
            raise InvalidSubmission(message) from None
        if not isinstance(record, dict):
            message = f"line {number}: expected a JSON object"
            raise InvalidSubmission(message)
        try:
            yield number, validate_submission(record)
        except InvalidSubmission as exc:
            message = f"line {number}: {exc}"
            raise InvalidSubmission(message) from None


def import_submissions(
    engine: Engine, lines: Iterable[str], *, batch: int = 1000, strict: bool = False
) -> ImportReport:
    """Insert JSON Lines submissions; rows whose submission or job id exists are skipped.

    All or nothing: every line is validated before anything is written, and every row is
    written in one transaction, so a bad line or a database failure half-way changes
    nothing. The report names each skipped row and why; ``strict`` refuses the whole file
    (:class:`ImportRefused`, nothing written) when any row would be skipped.
    """
    rows: list[dict[str, Any]] = []
    numbers: dict[str, int] = {}
    for number, values in _parse_lines(lines):
        if values["submission_id"] in numbers:
            message = f"line {number}: submission_id {values['submission_id']!r} repeats"
            raise InvalidSubmission(message)
        numbers[values["submission_id"]] = number
        rows.append(values)
    report = ImportReport(read=len(rows))
    now = utcnow()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            inserted = _copy_postgresql(conn, rows, now=now)
        else:
            inserted = _insert_batches(conn, rows, now=now, batch=batch)
        report.inserted = len(inserted)
        report.skipped = report.read - report.inserted
        left = [row for row in rows if row["submission_id"] not in inserted]
        report.skips = _skip_reasons(conn, left, numbers, inserted)
        if strict and report.skips:
            raise ImportRefused(report)  # leaving the block rolls every row back
    return report


def _skip_reasons(
    conn: sa.Connection,
    left: list[dict[str, Any]],
    numbers: Mapping[str, int],
    inserted: set[str],
) -> list[SkippedRow]:
    """Say why each row ``left`` out was not written: its id, or its job's, is taken."""
    if not left:
        return []
    table = Submission.__table__  # type: ignore[attr-defined]
    job_ids = [row["job_id"] for row in left if row["job_id"] is not None]
    holders: dict[str, str] = {}
    for start in range(0, len(job_ids), 1000):
        query = sa.select(table.c.job_id, table.c.submission_id).where(
            table.c.job_id.in_(job_ids[start : start + 1000])
        )
        holders.update({job: owner for job, owner in conn.execute(query).all()})
    skips = []
    for row in left:
        submission_id, job_id = row["submission_id"], row["job_id"]
        holder = holders.get(job_id) if job_id is not None else None
        if holder is not None and holder != submission_id:
            where = "this file" if holder in inserted else "the database"
            reason = f"job id belongs to {holder} ({where})"
        else:
            reason = "submission_id exists"
        skips.append(SkippedRow(numbers[submission_id], submission_id, reason))
    return sorted(skips, key=lambda skip: skip.line)


_IMPORTED = ("submission_id", "user_id", "input_url", "job_id", "status", "meta")


def _insert_batches(
    conn: sa.Connection, rows: list[dict[str, Any]], *, now: datetime, batch: int
) -> set[str]:
    table = Submission.__table__  # type: ignore[attr-defined]
    statement = sqlite.insert(table).on_conflict_do_nothing().returning(table.c.submission_id)
    inserted: set[str] = set()
    for start in range(0, len(rows), batch):
        chunk = [
            {**row, "created_at": now, "updated_at": now} for row in rows[start : start + batch]
        ]
        inserted.update(conn.execute(statement, chunk).scalars())
    return inserted


def _copy_postgresql(conn: sa.Connection, rows: list[dict[str, Any]], *, now: datetime) -> set[str]:
    """COPY the rows into a staging table, then insert the new ones in one statement.

    Measured: 30,000 rows through INSERT … VALUES batches took 11 s, most of it psycopg
    parsing the long statements; through COPY, about a second. The driver's COPY is used
    because SQLAlchemy has none.
    """
    columns = ", ".join(_IMPORTED)
    conn.exec_driver_sql(
        "CREATE TEMPORARY TABLE import_rows (submission_id text, user_id text, input_url text,"
        " job_id text, status text, meta jsonb) ON COMMIT DROP"
    )
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(f"COPY import_rows ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([*(row[name] for name in _IMPORTED[:-1]), json.dumps(row["meta"])])
    result = conn.execute(
        sa.text(
            f"INSERT INTO submissions ({columns}, created_at, updated_at)"  # noqa: S608
            f" SELECT {columns}, :now, :now FROM import_rows ON CONFLICT DO NOTHING"
            " RETURNING submission_id"
        ),
        {"now": now},
    )
    return set(result.scalars())
