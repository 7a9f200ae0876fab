"""What the stand-in sent: each planned delivery, its record for tests, and the counts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Delivery", "DeliveryRecord", "Stats"]


@dataclass(frozen=True, slots=True)
class Stats:
    """Counts of what the stand-in did; ``outcomes`` are the receiver's answers."""

    jobs: int
    planned: int
    dropped: int
    duplicated: int
    reordered: int
    attempts: int
    retried: int
    delivered: int
    refused: int
    given_up: int
    pending: int
    outcomes: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        """Return the counts as JSON-ready data."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One planned delivery and what became of it.

    ``state`` is ``dropped`` (never sent), ``pending``, ``delivered`` (a 2xx),
    ``refused`` (a final non-2xx) or ``given_up`` (retries exhausted). ``order`` numbers
    the deliveries as they were settled, across all jobs.
    """

    seq: int
    order: int | None
    job_id: str
    event_id: str
    status: str
    destination: str
    copy: int
    reordered: bool
    state: str
    attempts: int
    answer_status: int | None
    outcome: str | None
    submission_status: str | None
    error: str | None


@dataclass(slots=True)
class Delivery:
    """One planned delivery while it is being sent: its body, URL and answer."""

    seq: int
    job_id: str
    event_id: str
    msg_id: str
    status: str
    destination: str
    url: str
    body: bytes
    copy: int
    #: The key it is signed with: a registered endpoint's own, else the configured one.
    key: bytes | None = None
    reordered: bool = False
    state: str = "pending"
    order: int | None = None
    attempts: int = 0
    answer_status: int | None = None
    answer: dict[str, Any] | None = None
    error: str | None = None

    def record(self) -> DeliveryRecord:
        """Return what tests and the demo read about this delivery."""
        answer = self.answer or {}
        outcome = answer.get("outcome")
        status = answer.get("status")
        return DeliveryRecord(
            seq=self.seq,
            order=self.order,
            job_id=self.job_id,
            event_id=self.event_id,
            status=self.status,
            destination=self.destination,
            copy=self.copy,
            reordered=self.reordered,
            state=self.state,
            attempts=self.attempts,
            answer_status=self.answer_status,
            outcome=outcome if isinstance(outcome, str) else None,
            submission_status=status if isinstance(status, str) else None,
            error=self.error,
        )
