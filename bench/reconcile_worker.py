"""One reconcile pass as the CLI runs it, measured from inside its own process.

    python -m bench.reconcile_worker [reconcile options]   (configured by the environment)

Runs ``jobhooks reconcile --json``'s command in this process, counts every SQL
statement sent to the database (a ``before_cursor_execute`` listener on the app's engine),
and prints one JSON line: the pass summary, statements, wall seconds and peak RSS.
"""

from __future__ import annotations

import io
import json
import resource
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from sqlalchemy import event

from receiver import create_app
from receiver.cli.reconcile import reconcile_command
from receiver.store.engines import get_engine


def _peak_rss_kib() -> int:
    """Return this process's peak RSS (VmHWM).

    Not ``ru_maxrss``: Linux carries that over from the parent through fork and exec,
    so a child started by a big parent reports the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> int:
    app = create_app()
    engine = get_engine(app)
    statements = 0
    transactions = 0

    @event.listens_for(engine, "before_cursor_execute")
    def _count_statement(*_args: Any) -> None:
        nonlocal statements
        statements += 1

    @event.listens_for(engine, "commit")
    def _count_transaction(*_args: Any) -> None:
        nonlocal transactions
        transactions += 1

    output = io.StringIO()
    started = time.perf_counter()
    with app.app_context(), redirect_stdout(output):
        try:
            reconcile_command.main(["--json", *sys.argv[1:]], standalone_mode=False)
        except SystemExit as exc:  # exit 1 when a job could not be checked
            if exc.code not in (0, 1, None):
                raise
    seconds = time.perf_counter() - started
    summary = json.loads(output.getvalue().strip().splitlines()[-1])
    peak_kib = _peak_rss_kib()
    print(
        json.dumps(
            {
                "bench": 1,
                "summary": summary,
                "statements": statements,
                "transactions": transactions,
                "seconds": seconds,
                "peak_rss_mib": round(peak_kib / 1024, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
