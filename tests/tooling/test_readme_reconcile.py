"""The README's description of a reconcile pass says what the code does."""

from __future__ import annotations

import re

from devtools.processes import ROOT
from receiver.cli.submit import submit_command


def _step(number: int) -> str:
    """Return step ``number`` of "One pass:" in the README, as one line."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Reconciling stuck jobs") :]
    section = section[: section.index("### The event list's cursor")]
    step = section[section.index(f"\n{number}. ") : section.index(f"\n{number + 1}. ")]
    return " ".join(step.split())


def test_unsubmitted_is_explained_with_its_stuck_after_wait() -> None:
    step = _step(3)
    assert "only counted as `unsubmitted`" in step
    assert "counted once unchanged for `STUCK_AFTER` (or `--older-than`)" in step
    # The command it advises is the real one (tests/unit/reconcile/test_reconcile.py holds
    # the rest: what is counted, when, and that no job is made).
    command = re.search(r"`(jobhooks submit [^`]+)`", step)
    assert command is not None
    options = {option for param in submit_command.params for option in param.opts}
    assert set(re.findall(r"--[a-z-]+", command.group(1))) <= options
