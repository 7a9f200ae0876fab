"""``utc_reader``, ``utc_text_reader`` and ``json_reader`` read the driver's values as
SQLAlchemy's types do.

The API's pages convert 100 rows' values with them instead of through SQLAlchemy's result
processors; here both read the same values, stored through SQLAlchemy and read back on the
driver's cursor, plus the shapes a row written by other means may hold.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from receiver.store.models import Submission, json_reader, utc_reader, utc_text_reader

_submissions = Submission.__table__  # type: ignore[attr-defined]
_c = _submissions.c
_MOMENTS = [
    datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),  # no fraction: isoformat leaves it out
    datetime(2026, 7, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5))),  # the next day in UTC
    None,
]
_METADATA = [{}, {"campaign": "été ☀", "n": "1"}, {"a": "x" * 200}]


def _driver_rows(engine: Engine) -> list[tuple[Any, Any]]:
    """Store one submission per moment and metadata; return their raw (moment, meta)."""
    rows = [
        {
            "submission_id": f"sub_{n}",
            "user_id": "u",
            "input_url": "https://uploads.example.com/v.mp4",
            "status": "pending",
            "meta": _METADATA[n % len(_METADATA)],
            "provider_updated_at": moment,
            "created_at": datetime.now(UTC),
            "updated_at": datetime.now(UTC),
            "poll_attempts": 0,
            "is_test": False,
            "job_kind": "video",
        }
        for n, moment in enumerate(_MOMENTS)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(_submissions), rows)
    with engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute("SELECT provider_updated_at, meta FROM submissions ORDER BY id")
        raw: list[tuple[Any, Any]] = [tuple(row) for row in cursor.fetchall()]  # type: ignore[misc]
        cursor.close()
    return raw


def _processor(engine: Engine, column: sa.Column[Any]) -> Any:
    dialect = engine.dialect
    found = column.type.dialect_impl(dialect).result_processor(dialect, None)
    return found or (lambda value: value)


def test_stored_values_read_as_sqlalchemy_reads_them(engine: Engine) -> None:
    name = engine.dialect.name
    by_sqlalchemy_moment = _processor(engine, _c.provider_updated_at)
    by_sqlalchemy_json = _processor(engine, _c.meta)
    read_moment, read_json = utc_reader(name), json_reader(name)
    raw = _driver_rows(engine)
    moments = [read_moment(moment) for moment, _ in raw]
    assert moments == [by_sqlalchemy_moment(moment) for moment, _ in raw]
    assert [utc_text_reader(name)(moment) for moment, _ in raw] == [
        None if m is None else m.isoformat() for m in moments
    ]
    assert [read_json(meta) for _, meta in raw] == [by_sqlalchemy_json(meta) for _, meta in raw]
    # And what each was stored as: the same instant, in UTC, with UTC's offset in ISO.
    assert moments == [None if m is None else m.astimezone(UTC) for m in _MOMENTS]
    assert [m.isoformat() for m in moments if m is not None] == [
        "2026-01-02T03:04:05.678901+00:00",
        "2026-01-02T03:04:05+00:00",
        "2026-07-02T04:30:00+00:00",
    ]


def test_other_shapes_a_driver_may_give_read_as_sqlalchemy_reads_them(engine: Engine) -> None:
    name = engine.dialect.name
    by_sqlalchemy_moment = _processor(engine, _c.provider_updated_at)
    by_sqlalchemy_json = _processor(engine, _c.meta)
    if name == "sqlite":
        # Text written by SQLite itself (milliseconds), with an offset, and JSON that is not
        # an object: a number is handed back as the number.
        moments: list[Any] = ["2026-01-02 03:04:05.678", "2026-01-02T03:04:05+02:00", None]
        documents: list[Any] = ['"text"', "[1, 2]", 5, 2.5, None, '{"k": null}']
    else:
        moments = [
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
            datetime(2026, 1, 2, 3, 4, 5),  # naive: taken as UTC, as UTCDateTime does
            None,
        ]
        documents = [{"k": None}, [1, 2], "text", None]
    assert [utc_reader(name)(m) for m in moments] == [by_sqlalchemy_moment(m) for m in moments]
    texts = [utc_text_reader(name)(m) for m in moments]
    assert texts == [None if m is None else by_sqlalchemy_moment(m).isoformat() for m in moments]
    read_json = json_reader(name)
    assert [read_json(d) for d in documents] == [by_sqlalchemy_json(d) for d in documents]


def _outcome(read: Any, value: Any) -> tuple[str, Any]:
    try:
        return "value", read(value)
    except ValueError as exc:
        return type(exc).__name__, str(exc)


def test_json_text_with_space_around_or_errors_reads_as_json_loads_reads_it() -> None:
    read = json_reader("sqlite")
    by_sqlalchemy = sa.JSON().result_processor(sa.dialects.sqlite.dialect(), None)
    texts = [
        '{"a": [1, {"b": "é"}], "c": null}',
        ' {"a": 1}\n',  # space around: not the scanner's, json.loads'
        '{"a": 1} {"b": 2}',  # extra data
        '{"a": }',
        "",
        "  ",
        "nul",
        '"\ud800"',
    ]
    assert [_outcome(read, text) for text in texts] == [
        _outcome(by_sqlalchemy, text) for text in texts
    ]
    assert _outcome(read, ' {"a": 1}\n') == ("value", {"a": 1})
    assert _outcome(read, '{"a": 1} {"b": 2}')[0] == "JSONDecodeError"
