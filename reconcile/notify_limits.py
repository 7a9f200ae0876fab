"""How long a notification attempt and a claim on one last.

Apart from the notifier so that the ``notify`` command can show them in its options
without importing the notifier (and httpx) to list its help.
"""

from __future__ import annotations

__all__ = ["DELIVERY_TIMEOUT", "LEASE_SECONDS"]

#: A notification is delivered by a 2xx answer within this many seconds.
DELIVERY_TIMEOUT = 15.0
#: How long a lease lasts: longer than the longest attempt, so no two workers send one row
#: at once; a crashed worker's rows go out again after it.
LEASE_SECONDS = 60.0
