"""The token redaction runs in linear time: a megabyte of adversarial text, in a child process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_REDACT_A_MEGABYTE = """
import sys, time
from bench.redact import adversarial_texts
from receiver.observe.logs import redact_tokens
texts = adversarial_texts().values()
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
    # `make bench BENCH_ARGS="--only redact"` measures it (median 24 ms at worst, for a
    # token end every 31 characters); this bound only tells linear from quadratic on a busy
    # machine.
    assert float(done.stdout) < 0.5
