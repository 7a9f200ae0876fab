"""Seeded delivery faults: which deliveries are dropped, sent twice or held back."""

from __future__ import annotations

import random

from devtools.standin.options import StandinConfig

__all__ = ["FaultPlan"]


class FaultPlan:
    """Draw each delivery's faults from the seed, the job's number, its step, the destination.

    Every draw comes from a generator seeded with those parts alone, so a fault does not
    depend on the order in which deliveries happen to be planned. A job is known by its
    number (1 for the session's first) and never by its id, which is new in every
    session: the same seed and the same order of creation meet the same faults.
    """

    def __init__(self, config: StandinConfig) -> None:
        self._config = config
        # Only the delays share one generator: they are timing, not a fault a test counts.
        self._jitter = random.Random(f"{config.seed}:jitter")

    def _draw(self, job: int, *parts: str) -> float:
        key = ":".join((str(self._config.seed), f"job{job}", *parts))
        return random.Random(key).random()

    def holds_back(self, job: int, destination: str) -> bool:
        """Return whether the job's ``processing`` delivery goes after its final one."""
        return self._draw(job, "reorder", destination) < self._config.reorder_rate

    def drops(self, job: int, step: str, destination: str) -> bool:
        """Return whether this delivery is never sent."""
        return self._draw(job, step, destination, "drop") < self._config.drop_rate

    def duplicates(self, job: int, step: str, destination: str) -> bool:
        """Return whether this delivery is sent twice."""
        return self._draw(job, step, destination, "duplicate") < self._config.duplicate_rate

    def delay(self) -> float:
        """Return the wait before a delivery: ``delay`` plus up to ``jitter`` more.

        Call it with the stand-in's lock held: the generator is shared.
        """
        config = self._config
        jitter = self._jitter.uniform(0, config.jitter) if config.jitter else 0.0
        return config.delay + jitter
