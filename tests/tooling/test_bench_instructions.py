"""The instruction counter's harness (``bench/instructions.py``): it must drive real
deliveries through the app. The count itself needs valgrind and minutes, so it is left to
``python -m bench.instructions``; here the same loop runs under cProfile."""

from __future__ import annotations

import re
import subprocess
import sys

from devtools.processes import ROOT


def test_the_counted_deliveries_are_each_applied_by_the_real_app() -> None:
    command = [sys.executable, "-m", "bench.instructions", "--cprofile"]
    finished = subprocess.run(
        [*command, "--deliveries", "4", "--warmup", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "6 deliveries answered 200 (applied)" in finished.stdout
    # What is profiled (and, under valgrind, counted) is the loop after the warm-up: the
    # webhook view's handler ran in it once per counted delivery.
    assert re.search(r"^\s+4\s.*receiver/web/webhooks\.py:\d+\(_handle\)$", finished.stdout, re.M)
