"""The stand-in's clock: callables run after a delay, on one thread, by ``sched``."""

from __future__ import annotations

import sched
import threading
import time
from collections.abc import Callable

from devtools.standin.logs import get_logger

__all__ = ["Clock"]

log = get_logger(__name__)


class Clock:
    """Run callables after a delay, in the order they fall due, on one thread.

    ``sched.scheduler`` keeps the queue (a heap: cheap with thousands of jobs waiting);
    the thread runs what is due, then sleeps until the next call is due or until
    :meth:`call_later` enters one, which may be sooner.
    """

    def __init__(self) -> None:
        # run(blocking=False) calls delayfunc(0) after every call it runs; the default,
        # time.sleep(0), hands the GIL to any busy thread and waits to get it back (up to
        # 5 ms each): with 10,000 jobs being created the clock fell seconds behind.
        self._scheduler = sched.scheduler(time.monotonic, _no_pause)
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="standin-clock", daemon=True)

    def start(self) -> None:
        """Start the clock's thread."""
        self._thread.start()

    def call_later(self, delay: float, function: Callable[[], None]) -> None:
        """Run ``function`` on the clock's thread ``delay`` seconds from now."""
        if self._stopped:
            return
        self._scheduler.enter(max(delay, 0.0), 0, self._call, (function,))
        self._wake.set()

    def stop(self) -> None:
        """Stop the thread; calls not yet run never run."""
        self._stopped = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopped:
            # Runs every call that is due; returns the wait until the next (None: none).
            wait = self._scheduler.run(blocking=False)
            self._wake.wait(wait)
            # A call entered after this clear is still seen: run() reads the queue next.
            self._wake.clear()

    def _call(self, function: Callable[[], None]) -> None:
        if self._stopped:
            return
        try:
            function()
        except Exception:  # one bad call must not stop every job (logged)
            log.exception("stand-in task failed")


def _no_pause(seconds: float) -> None:
    """Do not sleep: the clock's thread does its waiting on its wake-up event."""
