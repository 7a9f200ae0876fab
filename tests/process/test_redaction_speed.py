"""The token redaction runs in linear time: a megabyte of adversarial text, in a child process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_REDACT_A_MEGABYTE = """
import sys, time
from receiver.observe.logs import redact_tokens
size = 1024 * 1024
texts = [
    "eyJ" * (size // 3),                     # every "eyJ" starts a token that never ends
    ".eyJ" * (size // 4),
    "eyJ" * (size // 3 - 1) + ".short",
    "/webhooks/ittybit" * (size // 17),
    ("a" * 26 + ".") * (size // 27),
    ("eyJ" + "a" * 27 + ".") * (size // 31),  # a token end at every dot
    "." * size,
    "/webhooks/" + "/" * size + "x",
]
worst = 0.0
for text in texts:
    started = time.perf_counter()
    redact_tokens(text)
    worst = max(worst, time.perf_counter() - started)
print(worst)
"""


def test_redacting_a_megabyte_of_adversarial_text_takes_linear_time() -> None:
    # In a child process with a timeout: a backtracking search would take half an hour on
    # these (it took ~1 s on 24 KB), and must fail the test rather than hang it.
    done = subprocess.run(
        [sys.executable, "-c", _REDACT_A_MEGABYTE],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    # Measured 1-10 ms for most, 0.1 s for the densest (a token end every 31 characters);
    # the bound leaves room for a busy machine.
    assert float(done.stdout) < 0.5
