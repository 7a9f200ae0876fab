"""The ceiling: a bare Flask app whose webhook routes answer 200 and do nothing else.

Served by the same gunicorn command and settings as the real app, so the ratio between
the two measures only what the real handler adds.
"""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.post("/webhooks/ittybit")
@app.post("/webhooks/ittybit/<token>")
def webhook(token: str | None = None) -> tuple[str, int]:
    return "", 200


@app.get("/readyz")
def readyz() -> tuple[str, int]:
    return "", 200
