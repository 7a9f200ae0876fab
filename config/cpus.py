"""Which CPU each web worker runs on (``WEB_PIN_CPUS``).

A gthread worker's threads hand the GIL to one another many times a request: the main loop
wakes for every request that arrives and every answer that leaves, and SQLite gives the GIL
up at each statement. Spread over two cores, each hand-off wakes the other core and moves the
interpreter's state between their caches; on one core it is a plain switch. Measured on two
cores (bench/README.md, "Worker class"), two gthread workers each pinned to its own CPU
answered 92-99 % of sync workers' webhooks on SQLite, unpinned 76-86 %.

Pinning only pays when the workers fill the machine anyway: with more CPUs than workers the
scheduler may have a free core for a worker whose own is busy, so ``auto`` leaves them
unpinned. A sync worker has no second thread to hand the GIL to, and is never pinned by
``auto`` (pinned, it was a little slower).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

__all__ = ["MODES", "next_cpu", "should_pin", "usable_cpus"]

#: ``WEB_PIN_CPUS``: ``auto`` pins threaded workers when there are no more CPUs than workers.
MODES = ("auto", "on", "off")


def usable_cpus() -> list[int]:
    """Return the CPUs this process may run on (a container's cpuset, ``taskset``), in order."""
    return sorted(os.sched_getaffinity(0))


def should_pin(mode: str, *, workers: int, threads: int, cpus: int) -> bool:
    """Tell whether web workers are pinned, one CPU each, under ``WEB_PIN_CPUS=mode``."""
    if mode == "on":
        return True
    if mode == "off":
        return False
    return threads > 1 and workers >= cpus


def next_cpu(usable: Sequence[int], taken: Iterable[int | None]) -> int:
    """Return the usable CPU that the fewest live workers run on (the lowest on a tie).

    ``taken`` holds the CPU of each live worker (None for one not pinned), so a worker that
    replaces a dead one gets the CPU it left, not a third worker on a busy one.
    """
    if not usable:
        message = "no CPU to pin a worker to"
        raise ValueError(message)
    load = dict.fromkeys(usable, 0)
    for cpu in taken:
        if cpu in load:
            load[cpu] += 1
    return min(usable, key=lambda cpu: (load[cpu], cpu))
