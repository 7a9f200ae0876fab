"""The ordering and terminal rules, as a pure function of stored row and incoming state."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from receiver.jobstate import JobState, status_family
from receiver.models import Outcome, Status
from receiver.transitions import SubmissionRow, decide_transition

T = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def row(**changes: object) -> SubmissionRow:
    base = SubmissionRow(
        id=1,
        submission_id="sub_1",
        user_id="user_1",
        job_id="job_1",
        status=Status.PENDING.value,
        provider_status=None,
        output_url=None,
        error=None,
        provider_updated_at=None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def state(provider_status: str, **changes: object) -> JobState:
    base = JobState(
        job_id="job_1", provider_status=provider_status, status=status_family(provider_status)
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_pending_to_processing_is_applied() -> None:
    change = decide_transition(row(), state("processing", updated_at=T))
    assert change.outcome is Outcome.APPLIED
    assert change.values == {
        "status": "processing",
        "provider_status": "processing",
        "provider_updated_at": T,
    }


def test_success_stores_output_url() -> None:
    change = decide_transition(
        row(status="processing", provider_status="processing"),
        state("succeeded", output_url="https://cdn/out.mp4"),
    )
    assert change.outcome is Outcome.APPLIED
    assert change.values == {
        "status": "succeeded",
        "provider_status": "succeeded",
        "output_url": "https://cdn/out.mp4",
    }


def test_failure_stores_error() -> None:
    change = decide_transition(row(), state("error", error="codec not supported"))
    assert change.values == {
        "status": "failed",
        "provider_status": "error",
        "error": "codec not supported",
    }


def test_job_id_is_filled_in_when_unknown() -> None:
    change = decide_transition(row(job_id=None), state("queued"))
    assert change.values is not None
    assert change.values["job_id"] == "job_1"


@pytest.mark.parametrize("final", ["succeeded", "failed", "cancelled"])
@pytest.mark.parametrize("running", ["processing", "queued", "pending", "made_up_status"])
def test_running_never_overwrites_terminal(final: str, running: str) -> None:
    current = row(status=final, provider_status=final, provider_updated_at=T)
    change = decide_transition(current, state(running, updated_at=T + timedelta(hours=1)))
    assert change.outcome is Outcome.STALE
    assert change.values is None
    assert change.reason == f"submission is already {final}"


def test_older_timestamp_is_stale() -> None:
    current = row(status="processing", provider_status="processing", provider_updated_at=T)
    change = decide_transition(current, state("finishing", updated_at=T - timedelta(seconds=1)))
    assert change.outcome is Outcome.STALE
    assert change.reason == "older than the state already recorded"


def test_older_final_state_is_stale_too() -> None:
    current = row(status="processing", provider_status="processing", provider_updated_at=T)
    change = decide_transition(current, state("succeeded", updated_at=T - timedelta(minutes=5)))
    assert change.outcome is Outcome.STALE


def test_conflicting_final_state_needs_a_newer_timestamp() -> None:
    current = row(status="succeeded", provider_status="succeeded", provider_updated_at=T)
    same_time = decide_transition(current, state("failed", error="x", updated_at=T))
    no_time = decide_transition(current, state("failed", error="x"))
    later = decide_transition(current, state("failed", error="x", updated_at=T + timedelta(1)))
    assert same_time.outcome is Outcome.STALE
    assert no_time.outcome is Outcome.STALE
    assert later.outcome is Outcome.APPLIED
    assert later.values is not None
    assert later.values["status"] == "failed"


def test_same_state_again_is_duplicate() -> None:
    current = row(
        status="succeeded",
        provider_status="succeeded",
        output_url="https://cdn/out.mp4",
        provider_updated_at=T,
    )
    change = decide_transition(
        current, state("succeeded", output_url="https://cdn/out.mp4", updated_at=T)
    )
    assert change.outcome is Outcome.DUPLICATE
    assert change.values is None


def test_success_without_output_keeps_the_known_output() -> None:
    current = row(status="processing", provider_status="processing", output_url="https://k")
    change = decide_transition(current, state("completed"))
    assert change.values is not None
    assert "output_url" not in change.values


def test_expired_is_replaced_only_by_a_final_state() -> None:
    current = row(status="expired", provider_status="processing")
    assert decide_transition(current, state("processing")).outcome is Outcome.STALE
    late_success = decide_transition(current, state("succeeded", output_url="https://o"))
    assert late_success.outcome is Outcome.APPLIED


def test_retry_after_failure_clears_error_on_success_with_newer_time() -> None:
    current = row(status="failed", provider_status="failed", error="boom", provider_updated_at=T)
    change = decide_transition(
        current, state("succeeded", output_url="https://o", updated_at=T + timedelta(minutes=1))
    )
    assert change.outcome is Outcome.APPLIED
    assert change.values is not None
    assert change.values["error"] is None
