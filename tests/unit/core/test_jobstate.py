"""Normalising every ittybit payload shape, status spelling and timestamp form."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from receiver.core.jobstate import (
    InvalidPayload,
    JobState,
    NotAJob,
    normalise,
    parse_json,
    parse_timestamp,
    status_family,
)
from receiver.store.models import Status

T = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
T_SECONDS = int(T.timestamp())


# --- payload shapes ---------------------------------------------------------------------


def test_bare_job() -> None:
    state = normalise(
        {
            "id": "job_abc123",
            "status": "succeeded",
            "metadata": {"submission_id": "sub_1", "user_id": "user_1"},
            "output": {"url": "https://cdn.example.com/a.mp4"},
        }
    )
    assert state == JobState(
        job_id="job_abc123",
        provider_status="succeeded",
        status=Status.SUCCEEDED,
        output_url="https://cdn.example.com/a.mp4",
        metadata={"submission_id": "sub_1", "user_id": "user_1"},
    )


def test_output_as_plain_string() -> None:
    state = normalise({"id": "job_1", "status": "succeeded", "output": "https://cdn/x.mp4"})
    assert state.output_url == "https://cdn/x.mp4"


def test_bare_task_with_output_object() -> None:
    state = normalise(
        {"id": "task_1", "object": "task", "status": "ready", "output": {"url": "https://t/1"}}
    )
    assert (state.job_id, state.status, state.output_url) == (
        "task_1",
        Status.SUCCEEDED,
        "https://t/1",
    )


def test_bare_task_with_outputs_list_takes_the_last() -> None:
    state = normalise(
        {
            "id": "tsk_1",
            "status": "completed",
            "progress": 100,
            "outputs": [{"url": "https://t/first"}, {"url": "https://t/last"}, {"kind": "x"}],
        }
    )
    assert state.output_url == "https://t/last"


def test_output_taken_from_the_final_task() -> None:
    state = normalise(
        {
            "id": "job_1",
            "status": "succeeded",
            "tasks": [
                {"id": "task_a", "status": "succeeded", "output": {"url": "https://t/a"}},
                {"id": "task_b", "status": "succeeded", "outputs": [{"url": "https://t/b"}]},
            ],
        }
    )
    assert state.output_url == "https://t/b"


def test_job_output_wins_over_tasks() -> None:
    state = normalise(
        {
            "id": "job_1",
            "status": "succeeded",
            "output": "https://job/out",
            "tasks": [{"id": "task_a", "output": {"url": "https://t/a"}}],
        }
    )
    assert state.output_url == "https://job/out"


def test_event_envelope_with_task_and_status_from_kind() -> None:
    state = normalise(
        {
            "id": "evt_123",
            "object": "event",
            "kind": "task.succeeded",
            "created_at": "2024-05-01T12:00:00Z",
            "data": {
                "id": "task_9",
                "object": "task",
                "output": {"url": "https://t/9"},
                "metadata": {"submission_id": "sub_9"},
            },
        }
    )
    assert state.job_id == "task_9"
    assert state.provider_status == "succeeded"
    assert state.status is Status.SUCCEEDED
    assert state.event_id == "evt_123"
    assert state.updated_at == T
    assert state.output_url == "https://t/9"
    assert state.meta_str("submission_id") == "sub_9"


def test_event_envelope_without_object_is_recognised_by_evt_id() -> None:
    state = normalise(
        {"id": "evt_9", "type": "job.failed", "data": {"id": "job_9", "error": "bad input"}}
    )
    assert (state.job_id, state.status, state.error) == ("job_9", Status.FAILED, "bad input")
    assert state.event_id == "evt_9"


def test_event_data_status_wins_over_kind() -> None:
    state = normalise(
        {"id": "evt_1", "object": "event", "kind": "job.updated",
         "data": {"id": "job_1", "status": "processing"}}
    )  # fmt: skip
    assert state.status is Status.PROCESSING


def test_event_wrapping_a_job_key() -> None:
    state = normalise(
        {"id": "evt_1", "object": "event", "data": {"job": {"id": "job_1", "status": "queued"}}}
    )
    assert state.job_id == "job_1"


def test_legacy_wrapper_with_outer_error() -> None:
    state = normalise(
        {
            "meta": {"request_id": "req_1", "type": "object"},
            "data": {"id": "task_1", "status": "error", "updated_at": T_SECONDS},
            "error": {"message": "codec not supported"},
        }
    )
    assert state.job_id == "task_1"
    assert state.status is Status.FAILED
    assert state.error == "codec not supported"
    assert state.updated_at == T
    assert state.event_id is None


def test_legacy_wrapper_success() -> None:
    state = normalise(
        {
            "meta": {"request_id": "req_1"},
            "data": {"id": "task_1", "status": "ready", "output": {"url": "https://t/1"}},
            "error": None,
        }
    )
    assert (state.status, state.output_url, state.error) == (Status.SUCCEEDED, "https://t/1", None)


@pytest.mark.parametrize(
    "payload",
    [
        [],
        "job",
        {"status": "succeeded"},
        {"id": "", "status": "succeeded"},
        {"id": 12, "status": "succeeded"},
        {"id": "job_1"},
        {"id": "job_1", "status": "succeeded", "metadata": ["x"]},
        {"id": "evt_1", "object": "event", "kind": "job.succeeded", "data": None},
        {"meta": {}, "data": "nope", "error": None},
        {"id": "job_1", "status": "succeeded", "updated_at": "yesterday"},
        {"id": "job_1", "status": "succeeded", "updated_at": True},
        {"id": "job_1", "status": "succeeded", "updated_at": -5},
        {"id": "job_1", "status": "succeeded", "updated_at": [1]},
        {"id": "job_1", "status": "succeeded", "updated_at": 1e300},
    ],
)
def test_not_a_job(payload: Any) -> None:
    with pytest.raises(NotAJob):
        normalise(payload)


# --- status families ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "family"),
    [
        ("pending", Status.PROCESSING),
        ("waiting", Status.PROCESSING),
        ("queued", Status.PROCESSING),
        ("validating", Status.PROCESSING),
        ("processing", Status.PROCESSING),
        ("finishing", Status.PROCESSING),
        ("succeeded", Status.SUCCEEDED),
        ("completed", Status.SUCCEEDED),
        ("ready", Status.SUCCEEDED),
        ("Succeeded ", Status.SUCCEEDED),
        ("failed", Status.FAILED),
        ("error", Status.FAILED),
        ("cancelled", Status.CANCELLED),
        ("canceled", Status.CANCELLED),
        ("CANCELED", Status.CANCELLED),
    ],
)
def test_status_family(spelling: str, family: Status) -> None:
    assert status_family(spelling) is family


def test_unknown_status_counts_as_running_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="receiver.core.jobstate"):
        assert status_family("transmogrifying") is Status.PROCESSING
    assert "transmogrifying" in caplog.text


def test_error_is_kept_only_for_failed_and_cancelled() -> None:
    running = normalise({"id": "job_1", "status": "processing", "error": "transient"})
    failed = normalise({"id": "job_1", "status": "failed", "error": "transient"})
    cancelled = normalise({"id": "job_1", "status": "canceled", "error": {"code": "by_user"}})
    assert running.error is None
    assert failed.error == "transient"
    assert cancelled.error == "by_user"


def test_error_object_without_message_is_stored_as_json() -> None:
    state = normalise({"id": "job_1", "status": "failed", "error": {"reason": "x"}})
    assert state.error == '{"reason": "x"}'


def test_long_texts_are_bounded() -> None:
    state = normalise(
        {"id": "j" * 500, "status": "failed", "error": "e" * 10_000, "output": "u" * 5000}
    )
    assert len(state.job_id) == 200
    assert state.error is not None
    assert len(state.error) == 2000
    assert state.output_url is not None
    assert len(state.output_url) == 2048


# --- timestamps -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        T_SECONDS,
        float(T_SECONDS),
        str(T_SECONDS),
        T_SECONDS * 1000,
        str(T_SECONDS * 1000),
        "2024-05-01T12:00:00Z",
        "2024-05-01T12:00:00.000Z",
        "2024-05-01T14:00:00+02:00",
        "2024-05-01T12:00:00",
    ],
)
def test_timestamp_forms(value: Any) -> None:
    assert parse_timestamp(value) == T


def test_milliseconds_keep_their_fraction() -> None:
    parsed = parse_timestamp(T_SECONDS * 1000 + 250)
    assert parsed is not None
    assert parsed.microsecond == 250_000


def test_missing_timestamp_is_none() -> None:
    assert parse_timestamp(None) is None
    assert parse_timestamp("") is None


@pytest.mark.parametrize("field", ["updated_at", "finished_at"])
def test_job_timestamp_fields(field: str) -> None:
    state = normalise({"id": "job_1", "status": "succeeded", field: T_SECONDS * 1000})
    assert state.updated_at == T


def test_updated_at_wins_over_envelope_time() -> None:
    state = normalise(
        {
            "id": "evt_1",
            "object": "event",
            "created_at": T_SECONDS + 60,
            "data": {"id": "job_1", "status": "processing", "updated_at": T_SECONDS},
        }
    )
    assert state.updated_at == T


# --- metadata and JSON ----------------------------------------------------------------------


def test_meta_str_reads_numbers_but_not_other_types() -> None:
    state = normalise(
        {
            "id": "job_1",
            "status": "queued",
            "metadata": {"submission_id": 42, "user_id": True, "campaign": {"a": 1}},
        }
    )
    assert state.meta_str("submission_id") == "42"
    assert state.meta_str("user_id") is None
    assert state.meta_str("campaign") is None
    assert state.meta_str("absent") is None


def test_parse_json_accepts_utf8_object() -> None:
    assert parse_json('{"name": "café"}'.encode()) == {"name": "café"}


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe{}",
        '{"name": "café"}'.encode("latin-1"),
        b"{not json",
        b"",
        b'{"value": NaN}',
        b'{"value": Infinity}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_parse_json_refuses(body: bytes) -> None:
    with pytest.raises(InvalidPayload):
        parse_json(body)


@pytest.mark.parametrize(
    "payload",
    [
        {"id": "job_\u0000", "status": "succeeded"},
        {"id": "job_1", "status": "succ\u0000eeded"},
        {"id": "job_1", "status": "failed", "error": "bad\u0000input"},
        {"id": "job_1", "status": "succeeded", "output": "https://cdn/\u0000.mp4"},
        {"id": "job_1", "status": "queued", "metadata": {"submission_id": "sub\u00001"}},
        {"id": "job_1", "status": "queued", "metadata": {"user_id": "\u0000"}},
        {"id": "evt_\u0000", "object": "event", "data": {"id": "job_1", "status": "queued"}},
    ],
)
def test_nul_characters_are_refused(payload: dict[str, Any]) -> None:
    with pytest.raises(NotAJob, match="NUL"):
        normalise(payload)


def test_nul_in_other_metadata_is_harmless() -> None:
    state = normalise({"id": "job_1", "status": "queued", "metadata": {"note": "a\u0000b"}})
    assert state.job_id == "job_1"
