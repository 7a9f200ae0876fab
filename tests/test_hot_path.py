"""The webhook's write path as tuned for speed: one statement per change and inbox row on
PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from receiver.apply import apply_change, find_submission
from receiver.inbox import Delivery, event_values
from receiver.jobstate import normalise
from receiver.models import Outcome, Submission, WebhookEvent, utcnow
from receiver.transitions import decide_transition
from tests.helpers import job_payload
from tests.test_webhooks import add_submission

_submissions = Submission.__table__  # type: ignore[attr-defined]
_events = WebhookEvent.__table__  # type: ignore[attr-defined]


def _stored(engine: Engine) -> tuple[str, list[str]]:
    with engine.connect() as conn:
        status = conn.execute(sa.select(_submissions.c.status)).scalar_one()
        keys = list(conn.execute(sa.select(_events.c.dedupe_key).order_by(_events.c.id)).scalars())
    return status, keys


def _apply(engine: Engine, key: str) -> int | None:
    """Apply a succeeded job to sub_1 with its inbox row ``key``; return the row's id."""
    state = normalise(job_payload())
    now = utcnow()
    delivery = Delivery(source="url", body="{}", headers={}, delivery_id=key)
    with engine.connect() as conn, conn.begin() as transaction:
        submission = find_submission(conn, submission_id="sub_1")
        assert submission is not None
        change = decide_transition(submission, state)
        event = event_values(
            key=key,
            delivery=delivery,
            state=state,
            submission_id="sub_1",
            outcome=change.outcome,
            reason=change.reason,
            now=now,
        )
        stored = apply_change(conn, submission, change, now=now, event=event)
        if stored is None:
            transaction.rollback()
        return stored


def test_a_change_and_its_inbox_row_are_written_together(engine: Engine) -> None:
    add_submission(engine)
    first = _apply(engine, "wh:one")
    assert isinstance(first, int)
    assert _stored(engine) == ("succeeded", ["wh:one"])


def test_a_taken_key_writes_nothing(engine: Engine) -> None:
    add_submission(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(_events).values(
                dedupe_key="wh:taken",
                received_at=utcnow(),
                source="url",
                body="{}",
                headers={},
                outcome=Outcome.APPLIED.value,
            )
        )
    assert _apply(engine, "wh:taken") is None
    assert _stored(engine) == ("pending", ["wh:taken"])
