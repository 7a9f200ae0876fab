"""Token redaction: every log line passes through it, so it must stay linear and quick.

``receiver.observe.logs.redact_tokens`` runs on each adversarial megabyte below, in this
process, ``runs`` times; the table shows the fastest and the median run of each text beside
the target (well under 50 ms a megabyte, whatever the text holds).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from receiver.observe.logs import redact_tokens

__all__ = ["TARGET_MS", "RedactRun", "adversarial_texts", "run_redact_suite"]

TARGET_MS = 50.0
MEGABYTE = 1024 * 1024


def adversarial_texts(size: int = MEGABYTE) -> dict[str, str]:
    """Texts that made a backtracking search quadratic, or that hold a token end densely."""
    return {
        "eyJ repeated (a token start that never ends)": "eyJ" * (size // 3),
        ".eyJ repeated": ".eyJ" * (size // 4),
        "eyJ repeated, then a short tail": "eyJ" * (size // 3 - 1) + ".short",
        "the webhook route repeated": "/webhooks/ittybit" * (size // 17),
        "runs one short of a signature": ("a" * 26 + ".") * (size // 27),
        "a token end every 31 characters": ("eyJ" + "a" * 27 + ".") * (size // 31),
        "dots only": "." * size,
        "a route with a megabyte of slashes": "/webhooks/" + "/" * size + "x",
    }


@dataclass(frozen=True)
class RedactRun:
    text: str
    size: int
    runs: int
    min_ms: float
    median_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_redact_suite(*, runs: int, progress: Callable[[str], None]) -> list[RedactRun]:
    """Time ``redact_tokens`` on each adversarial text, ``runs`` times each."""
    results = []
    for name, text in adversarial_texts().items():
        progress(f"redact: {name}")
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            redact_tokens(text)
            times.append((time.perf_counter() - started) * 1000)
        results.append(
            RedactRun(
                text=name,
                size=len(text),
                runs=runs,
                min_ms=round(min(times), 1),
                median_ms=round(statistics.median(times), 1),
            )
        )
    return results
