"""Normalising every ittybit payload shape, status spelling and timestamp form."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from ittybit.types.task import Task

from receiver.core.jobstate import (
    IgnoredEvent,
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
        {"id": "j" * 200, "status": "failed", "error": "e" * 10_000, "output": "u" * 5000}
    )
    assert len(state.job_id) == 200
    assert state.error is not None
    assert len(state.error) == 2000
    assert state.output_url is not None
    assert len(state.output_url) == 2048


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"id": "j" * 201, "status": "failed"}, "id"),
        ({"id": "j", "status": "s" * 51}, "status"),
        ({"id": "evt_" + "e" * 177, "object": "event", "data": {"id": "j", "status": "queued"}},
         "event id"),
        ({"id": "j", "status": "queued", "metadata": {"submission_id": "s" * 201}},
         "metadata.submission_id"),
        ({"id": "j", "status": "queued", "metadata": {"user_id": "u" * 201}}, "metadata.user_id"),
    ],
)  # fmt: skip
def test_an_id_longer_than_its_column_is_no_job(payload: dict[str, object], field: str) -> None:
    # Cutting it would make two ids one; storing it fails on PostgreSQL alone.
    with pytest.raises(NotAJob, match=f"^{field} is longer than"):
        normalise(payload)


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


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-23:00", "0001-01-01T00:00:00+14:00"])
def test_an_iso_time_past_the_range_in_utc_is_refused(value: str) -> None:
    with pytest.raises(NotAJob, match="out of range"):
        parse_timestamp(value)


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


# --- ittybit's own SDK shapes (the 2025-08-20 task) and every event kind ---------------------


def sdk_task(status: str = "completed", **extra: Any) -> dict[str, Any]:
    """Return a task body built with ittybit's Python SDK (1.0.0), so the shape is its own."""
    fields: dict[str, Any] = {
        "id": "task_sdk1",
        "object": "task",
        "kind": "video",
        "status": status,
        "output": {"url": "https://cdn.example.com/sdk.mp4"} if status == "completed" else None,
        "created": datetime(2024, 5, 1, 11, 0, tzinfo=UTC),
        "updated": T,
        # Not in the SDK's model; ittybit echoes it and the model keeps extra fields.
        "metadata": {"submission_id": "sub_1", "user_id": "user_1"},
    }
    fields.update(extra)
    body: dict[str, Any] = Task(**fields).model_dump(mode="json")
    return body


@pytest.mark.parametrize("shape", ["bare", "event", "wrapper"])
def test_sdk_task_times_are_the_provider_times(shape: str) -> None:
    task = sdk_task()
    assert "updated" in task and "updated_at" not in task  # the SDK's names, not ours
    payload: dict[str, Any] = task
    if shape == "event":
        # The envelope's own time is older: the task's ``updated`` must win over it.
        payload = {
            "id": "evt_sdk",
            "object": "event",
            "kind": "task.succeeded",
            "data": task,
            "created_at": T_SECONDS - 3600,
        }
    elif shape == "wrapper":
        payload = {"meta": {"request_id": "req_1"}, "data": task, "error": None}
    state = normalise(payload)
    assert state.status is Status.SUCCEEDED
    assert state.output_url == "https://cdn.example.com/sdk.mp4"
    assert state.updated_at == T


def test_sdk_task_created_is_the_time_when_nothing_later_is_given() -> None:
    task = sdk_task("pending")
    del task["updated"]
    assert normalise(task).updated_at == datetime(2024, 5, 1, 11, 0, tzinfo=UTC)


def _event(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": "evt_k1", "object": "event", "kind": kind, "data": data, "created_at": T_SECONDS}


@pytest.mark.parametrize(
    ("kind", "family"),
    [
        ("task.created", Status.PROCESSING),
        ("task.updated", Status.PROCESSING),
        ("task.succeeded", Status.SUCCEEDED),
        ("task.failed", Status.FAILED),
    ],
)
def test_task_event_kinds_without_a_status_read_from_the_kind(
    kind: str, family: Status, caplog: pytest.LogCaptureFixture
) -> None:
    data = {"id": "task_1", "object": "task", "metadata": {"submission_id": "sub_1"}}
    with caplog.at_level(logging.WARNING):
        state = normalise(_event(kind, data))
    assert state.status is family
    assert state.event_kind == kind
    assert "unknown ittybit status" not in caplog.text  # created/updated are known words


def test_task_updated_keeps_the_status_its_data_carries() -> None:
    data = sdk_task("processing", output=None)
    assert normalise(_event("task.updated", data)).provider_status == "processing"


def test_a_run_is_about_the_task_it_names() -> None:
    run = {"id": "run_1", "object": "run", "status": "completed", "task": sdk_task()}
    state = normalise(_event("run.completed", run))
    assert (state.job_id, state.status, state.event_kind) == (
        "task_sdk1",
        Status.SUCCEEDED,
        "run.completed",
    )
    by_id = normalise(_event("run.failed", {"id": "run_2", "task_id": "task_7"}))
    assert (by_id.job_id, by_id.status) == ("task_7", Status.FAILED)


def test_a_run_naming_no_task_is_matched_by_its_metadata() -> None:
    run = {"id": "run_3", "object": "run", "metadata": {"submission_id": "sub_9"}}
    state = normalise(_event("run.created", run))
    assert (state.job_id, state.meta_str("submission_id")) == ("run_3", "sub_9")


@pytest.mark.parametrize("kind", ["media.created", "automation.updated", "brand.new.kind"])
def test_an_unknown_kind_is_ignored_not_refused(kind: str) -> None:
    with pytest.raises(IgnoredEvent) as caught:
        normalise(_event(kind, {"id": "med_1", "object": "media"}))
    assert (caught.value.event_id, caught.value.kind) == ("evt_k1", kind)


def test_a_run_naming_neither_task_nor_metadata_is_ignored() -> None:
    with pytest.raises(IgnoredEvent):
        normalise(_event("run.succeeded", {"id": "run_4", "status": "succeeded"}))
