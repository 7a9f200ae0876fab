"""Slots for waiting on ittybit: one web worker of the machine's is always free for webhooks.

The web process has a few sync workers, and they also answer ittybit's webhooks, which
must be answered within 5 s. A create or a reconcile may wait on ittybit for up to
``API_ITTYBIT_BUDGET``; if every worker did at once, webhooks would queue behind them. So
at most ``WEB_CONCURRENCY - 1`` requests of one server wait on ittybit at a time (at
least one); a create that finds no slot free stores its submission as pending at once
(202) and leaves the job to the worker, a reconcile answers 503.

Slots are ``flock`` locks on files shared by the server's workers (the gunicorn master's
children): held while the call lasts, let go by the kernel if a worker dies.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from config.settings import Settings

__all__ = ["ittybit_slot"]


def _directory(settings: Settings) -> Path:
    # Shared by the workers of one server (one parent) on one database, and by nothing else.
    tag = hashlib.sha256(f"{os.getppid()}\n{settings.database_url}".encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"jobhooks-ittybit-slots-{tag}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


@contextmanager
def ittybit_slot(settings: Settings) -> Iterator[bool]:
    """Hold a slot for the ``with`` block and yield True, or yield False when none is free."""
    directory = _directory(settings)
    for number in range(max(1, settings.web_concurrency - 1)):
        descriptor = os.open(directory / f"slot-{number}", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            continue
        try:
            yield True
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
            os.close(descriptor)
        return
    yield False
