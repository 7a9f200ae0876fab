"""The status vocabularies: a submission's status, a delivery's outcome, a notification's.

Apart from the tables (``receiver.store.models`` re-exports them) so that the command line can
offer them as choices without importing the ORM.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["FINAL_STATUSES", "TERMINAL_STATUSES", "NotificationStatus", "Outcome", "Status"]


class Status(StrEnum):
    """The local status of a submission."""

    PENDING = "pending"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


#: States ittybit reports as final: never overwritten by a running state.
TERMINAL_STATUSES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
#: States the reconciler stops polling: the terminal ones plus its own give-up.
FINAL_STATUSES = TERMINAL_STATUSES | {Status.EXPIRED}


class Outcome(StrEnum):
    """What the service did with one delivery."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"
    UNMATCHED = "unmatched"
    REJECTED = "rejected"
    #: An event of a kind this service does not act on: kept, answered 200 (never retried).
    IGNORED = "ignored"


class NotificationStatus(StrEnum):
    """Where a notification to the application stands."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
