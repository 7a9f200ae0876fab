"""Web workers pinned one to a CPU (``WEB_PIN_CPUS``, config/cpus.py), under real gunicorn."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from devtools.processes import WebProcess


def _env(tmp_path: Path, pin: str) -> dict[str, str]:
    return {
        "APP_ENV": "development",
        "DATABASE_URL": f"sqlite:///{tmp_path}/jobhooks.db",
        "WEB_CONCURRENCY": "2",
        "WEB_THREADS": "4",
        "WEB_PIN_CPUS": pin,
    }


def _workers(web: WebProcess, count: int = 2, timeout: float = 20.0) -> list[int]:
    """Return the master's worker processes, waiting until there are ``count``."""
    assert web.pid is not None
    deadline = time.monotonic() + timeout
    while True:
        children = Path(f"/proc/{web.pid}/task/{web.pid}/children").read_text().split()
        pids = [int(pid) for pid in children]
        if len(pids) == count:
            return pids
        assert time.monotonic() < deadline, f"workers: {pids}"
        time.sleep(0.1)


def _allowed(pid: int, task: int | None = None) -> set[int]:
    """Return the CPUs a process (or one of its threads) may run on."""
    path = f"/proc/{pid}/task/{task}/status" if task else f"/proc/{pid}/status"
    for line in Path(path).read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            cpus: set[int] = set()
            for part in line.split(":", 1)[1].strip().split(","):
                first, _, last = part.partition("-")
                cpus.update(range(int(first), int(last or first) + 1))
            return cpus
    raise AssertionError(f"no Cpus_allowed_list in {path}")


def test_pinned_workers_run_on_one_cpu_each_and_a_replacement_takes_the_freed_one(
    gunicorn: Callable[..., WebProcess], tmp_path: Path
) -> None:
    web = gunicorn(_env(tmp_path, "on"))
    assert web.pid is not None
    usable = _allowed(web.pid)
    first, second = _workers(web)
    cpus = {pid: _allowed(pid) for pid in (first, second)}
    assert all(len(allowed) == 1 and allowed <= usable for allowed in cpus.values()), cpus
    if len(usable) > 1:
        assert cpus[first] != cpus[second]
    # Every thread of a worker (the main loop and the request threads, started by requests)
    # shares its CPU.
    with httpx.Client(base_url=web.url) as client:
        for _ in range(20):
            assert client.get("/healthz").status_code == 200
    assert max(len(os.listdir(f"/proc/{pid}/task")) for pid in (first, second)) > 1
    for pid in (first, second):
        assert {
            frozenset(_allowed(pid, int(task))) for task in os.listdir(f"/proc/{pid}/task")
        } == {frozenset(cpus[pid])}
    assert "runs on CPU" in web.log_tail()

    # The worker on the higher CPU dies: its replacement goes there, not to the lowest.
    victim, survivor = sorted((first, second), key=lambda pid: max(cpus[pid]), reverse=True)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while victim in (pids := _workers(web)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    (replacement,) = set(pids) - {survivor}
    assert _allowed(replacement) == cpus[victim]


def test_unpinned_workers_may_run_on_every_cpu_the_master_may(
    gunicorn: Callable[..., WebProcess], tmp_path: Path
) -> None:
    web = gunicorn(_env(tmp_path, "off"))
    assert web.pid is not None
    for pid in _workers(web):
        assert _allowed(pid) == _allowed(web.pid)
    assert "runs on CPU" not in web.log_tail()
