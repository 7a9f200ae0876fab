"""The webhook endpoint receives what the reference Standard Webhooks libraries send."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
import standardwebhooks
import svix.webhooks
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from receiver import create_app
from receiver.store.engines import get_engine
from receiver.store.models import WebhookEvent
from tests.helpers import WEBHOOK_SECRET, add_submission, encode, job_payload

PROJECT_URL = "/webhooks/ittybit"
#: A key whose base64 needs padding, handed out without it, as the reference libraries allow.
UNPADDED_SECRET = "whsec_" + base64.b64encode(b"an-endpoint-key-of-26-byte").decode().rstrip("=")


def sent_by(library: str, secret: str, body: bytes, *, msg_id: str, prefix: str) -> dict[str, str]:
    """Return the headers ``library`` signs ``body`` with, under ``prefix``-* names."""
    signer = svix.webhooks.Webhook if library == "svix" else standardwebhooks.Webhook
    stamp = int(time.time())
    signature = signer(secret).sign(msg_id, datetime.fromtimestamp(stamp, tz=UTC), body.decode())
    return {
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(stamp),
        f"{prefix}-signature": signature,
    }


def stored(engine: Engine) -> list[tuple[str, str]]:
    events = WebhookEvent.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(events.c.dedupe_key, events.c.outcome)).all()
    return [(row.dedupe_key, row.outcome) for row in rows]


@pytest.mark.parametrize(
    ("library", "prefix"),
    [("standardwebhooks", "webhook"), ("svix", "svix"), ("svix", "webhook")],
)
def test_an_unpadded_secret_verifies_what_the_reference_libraries_send(
    app_config: dict[str, Any], library: str, prefix: str
) -> None:
    app_config["ITTYBIT_WEBHOOK_SECRET"] = UNPADDED_SECRET
    app = create_app(app_config)
    engine = get_engine(app)
    try:
        add_submission(engine)
        body = encode(job_payload())
        headers = {
            "Content-Type": "application/json",
            **sent_by(library, UNPADDED_SECRET, body, msg_id="msg_ref", prefix=prefix),
        }
        response = app.test_client().post(PROJECT_URL, data=body, headers=headers)
        assert (response.status_code, response.get_json()["outcome"]) == (200, "applied")
        assert stored(engine) == [("wh:msg_ref", "applied")]
    finally:
        engine.dispose()


def test_a_valid_svix_set_wins_over_a_bad_webhook_signature(
    client: FlaskClient, engine: Engine
) -> None:
    add_submission(engine)
    body = encode(job_payload())
    headers = {
        "Content-Type": "application/json",
        **sent_by("svix", WEBHOOK_SECRET, body, msg_id="msg_svix", prefix="svix"),
        **sent_by("svix", WEBHOOK_SECRET, body, msg_id="msg_std", prefix="webhook"),
    }
    headers["webhook-signature"] = "v1,bm90IHRoZSBzaWduYXR1cmUgYXQgYWxsIQ=="
    # The svix library accepts exactly this delivery.
    svix.webhooks.Webhook(WEBHOOK_SECRET).verify(body, headers)

    response = client.post(PROJECT_URL, data=body, headers=headers)
    assert (response.status_code, response.get_json()["outcome"]) == (200, "applied")
    # The id of the set that verified is the one deduplicated on.
    assert stored(engine) == [("wh:msg_svix", "applied")]


def test_no_verifying_set_is_refused_and_nothing_stored(
    client: FlaskClient, engine: Engine
) -> None:
    add_submission(engine)
    body = encode(job_payload())
    headers = {
        "Content-Type": "application/json",
        **sent_by("svix", WEBHOOK_SECRET, body, msg_id="msg_svix", prefix="svix"),
        **sent_by("standardwebhooks", WEBHOOK_SECRET, body, msg_id="msg_std", prefix="webhook"),
    }
    forged = encode(job_payload(status="failed"))
    response = client.post(PROJECT_URL, data=forged, headers=headers)
    assert (response.status_code, response.get_json()["error"]) == (401, "bad_signature")
    assert stored(engine) == []
