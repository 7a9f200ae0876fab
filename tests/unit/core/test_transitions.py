"""The ordering and terminal rules, as a pure function of stored row and incoming state."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from receiver.core.jobstate import JobState, status_family
from receiver.core.transitions import SubmissionRow, decide_transition
from receiver.store.models import Outcome, Status

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


def test_a_final_state_replaces_a_running_one_whatever_their_timestamps() -> None:
    """Else the result would hang on arrival order, and a poll (same timestamp) could never
    settle it: the submission would stay running until it expired."""
    current = row(status="processing", provider_status="processing", provider_updated_at=T)
    earlier = T - timedelta(minutes=5)
    change = decide_transition(current, state("succeeded", updated_at=earlier))
    assert change.outcome is Outcome.APPLIED
    assert change.values is not None
    assert change.values["status"] == "succeeded"
    assert change.values["provider_updated_at"] == earlier


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


# --- the ordering rules, exactly (one row per rule; each says what would break it) ----------

LATER, EARLIER = T + timedelta(minutes=5), T - timedelta(minutes=5)


def expired(reason: str = "no final state") -> JobState:
    return JobState(
        job_id="job_1", provider_status="processing", status=Status.EXPIRED, error=reason
    )


@pytest.mark.parametrize(
    ("stored", "incoming", "outcome"),
    [
        # (a) a final state is never replaced by a running one, whatever the timestamps
        ({"status": "succeeded", "provider_status": "succeeded"}, state("processing"), "stale"),
        (
            {"status": "failed", "provider_status": "failed", "provider_updated_at": T},
            state("queued", updated_at=LATER),
            "stale",
        ),
        (
            {"status": "cancelled", "provider_status": "cancelled"},
            state("finishing", updated_at=LATER),
            "stale",
        ),
        # (b) a different final state needs a strictly later timestamp than the stored one
        (
            {"status": "succeeded", "provider_status": "succeeded", "provider_updated_at": T},
            state("failed", updated_at=LATER),
            "applied",
        ),
        (
            {"status": "succeeded", "provider_status": "succeeded", "provider_updated_at": T},
            state("failed", updated_at=T),
            "stale",
        ),
        (
            {"status": "succeeded", "provider_status": "succeeded", "provider_updated_at": T},
            state("failed"),
            "stale",
        ),
        # … and a stored final state without a timestamp stays, even against a dated one
        (
            {"status": "succeeded", "provider_status": "succeeded", "output_url": "https://o"},
            state("failed", updated_at=datetime(2020, 1, 1, tzinfo=UTC)),
            "stale",
        ),
        (
            {"status": "succeeded", "provider_status": "succeeded"},
            state("cancelled", updated_at=LATER),
            "stale",
        ),
        # (c) between running states the later timestamp wins …
        (
            {"status": "processing", "provider_status": "processing", "provider_updated_at": T},
            state("queued", updated_at=LATER),
            "applied",
        ),
        (
            {"status": "processing", "provider_status": "queued", "provider_updated_at": T},
            state("finishing", updated_at=EARLIER),
            "stale",
        ),
        # … and without one (either side), or at the same time, the step order decides
        ({"status": "processing", "provider_status": "processing"}, state("queued"), "stale"),
        ({"status": "processing", "provider_status": "processing"}, state("pending"), "stale"),
        ({"status": "processing", "provider_status": "finishing"}, state("validating"), "stale"),
        ({"status": "processing", "provider_status": "queued"}, state("validating"), "applied"),
        ({"status": "processing", "provider_status": "validating"}, state("processing"), "applied"),
        ({"status": "processing", "provider_status": "processing"}, state("finishing"), "applied"),
        (
            {"status": "processing", "provider_status": "processing", "provider_updated_at": T},
            state("queued"),
            "stale",
        ),
        (
            {"status": "processing", "provider_status": "queued"},
            state("processing", updated_at=T),
            "applied",
        ),
        (
            {"status": "processing", "provider_status": "processing", "provider_updated_at": T},
            state("waiting", updated_at=T),
            "stale",
        ),
        ({"status": "processing", "provider_status": "queued"}, state("waiting"), "stale"),
        ({"status": "processing", "provider_status": "queued"}, state("queued"), "duplicate"),
        ({"status": "pending", "provider_status": None}, state("queued"), "applied"),
        # (d) expired: replaces a running state, yields to any final one
        ({"status": "processing", "provider_status": "processing"}, expired(), "applied"),
        ({"status": "pending", "provider_status": None}, expired(), "applied"),
        ({"status": "succeeded", "provider_status": "succeeded"}, expired(), "stale"),
        ({"status": "failed", "provider_status": "failed"}, expired(), "stale"),
        (
            {"status": "expired", "provider_status": "processing", "error": "x"},
            expired("x"),
            "duplicate",
        ),
        ({"status": "expired", "provider_status": "processing"}, state("failed"), "applied"),
        (
            {"status": "expired", "provider_status": "processing"},
            state("queued", updated_at=LATER),
            "stale",
        ),
    ],
)
def test_the_ordering_rules(stored: dict[str, object], incoming: JobState, outcome: str) -> None:
    assert decide_transition(row(**stored), incoming).outcome.value == outcome


def test_a_replaced_success_takes_the_failure_and_drops_the_output() -> None:
    current = row(
        status="succeeded",
        provider_status="succeeded",
        output_url="https://o",
        provider_updated_at=T,
    )
    change = decide_transition(current, state("failed", error="broken", updated_at=LATER))
    assert change.values == {
        "status": "failed",
        "provider_status": "failed",
        "output_url": None,
        "error": "broken",
        "provider_updated_at": LATER,
    }


def test_the_same_final_state_again_only_fills_in_what_is_missing() -> None:
    current = row(status="succeeded", provider_status="succeeded", output_url="https://first")
    other_output = decide_transition(current, state("succeeded", output_url="https://second"))
    assert other_output.outcome is Outcome.DUPLICATE
    missing = row(status="succeeded", provider_status="succeeded")
    filled = decide_transition(missing, state("succeeded", output_url="https://late"))
    assert filled.values == {"output_url": "https://late"}


def test_a_final_state_without_a_timestamp_is_stored_without_one() -> None:
    """A running state's timestamp must not be taken for the final state's own."""
    current = row(status="processing", provider_status="processing", provider_updated_at=T)
    change = decide_transition(current, state("succeeded", output_url="https://o"))
    assert change.values is not None
    assert change.values["provider_updated_at"] is None


def test_expiry_keeps_what_ittybit_last_said() -> None:
    current = row(status="processing", provider_status="finishing", provider_updated_at=T)
    change = decide_transition(current, expired("no final state after 1d"))
    assert change.values == {"status": "expired", "error": "no final state after 1d"}
