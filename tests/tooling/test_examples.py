"""The README's example endpoint receives notifications signed as the notifier signs them."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from types import ModuleType

import pytest

from receiver.flows.endpoints.records import decode_webhook_secret
from reconcile.notifier import signature_header

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "notify_endpoint.py"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("JOBHOOKS_SECRET", SECRET)
    spec = importlib.util.spec_from_file_location("notify_endpoint", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def post(module: ModuleType, body: bytes, msg_id: str, secrets: list[str]) -> int:
    timestamp = int(time.time())
    keys = [decode_webhook_secret(secret) for secret in secrets]
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(keys, msg_id=msg_id, timestamp=timestamp, body=body),
        "content-type": "application/json",
    }
    return module.app.test_client().post("/jobhooks", data=body, headers=headers).status_code


def test_the_example_applies_a_notification_once_and_refuses_a_forgery(
    example: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    body = json.dumps(
        {
            "type": "submission.succeeded",
            "timestamp": "2026-11-30T06:41:22+00:00",
            "data": {
                "submission_id": "sub_1",
                "status": "succeeded",
                "output_url": "https://cdn.example.com/a.mp4",
                "error": None,
            },
        }
    ).encode()
    assert post(example, body, "msg_1", [SECRET]) == 204
    assert post(example, body, "msg_1", [SECRET]) == 204  # a retry: answered, not applied
    assert capsys.readouterr().out == "submission.succeeded sub_1 https://cdn.example.com/a.mp4\n"
    # While a secret rotates the notifier sends two signatures; the example takes either.
    assert post(example, body, "msg_2", [OLD_SECRET, SECRET]) == 204
    assert post(example, body, "msg_3", [OLD_SECRET]) == 401
    assert capsys.readouterr().out == "submission.succeeded sub_1 https://cdn.example.com/a.mp4\n"
