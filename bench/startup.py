"""Command start-up: the wall time of ``jobhooks --help`` and ``jobhooks submissions show ID``.

Each run is a fresh process of this venv's console script, as a person or a one-off dyno
starts it, with the service's production environment (``service_env``) and a migrated
SQLite database in a temporary folder holding one submission. One unmeasured run of each
command first writes the bytecode caches; then the commands take turns, ``runs`` times
each, so that a change in the shared machine's load touches both alike. What is timed is
the whole process, from ``exec`` to exit: interpreter start, imports, the app, the query.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Database, service_env
from devtools.processes import ROOT, jobhooks_command

__all__ = [
    "COMMANDS",
    "HELP_TARGET_S",
    "SUBMISSION_ID",
    "TARGET_S",
    "StartupRun",
    "run_startup_suite",
    "target_s",
]

SUBMISSION_ID = "sub_startup_1"
#: (name, arguments): the commands timed.
COMMANDS = (
    ("--help", ("--help",)),
    ("submissions show", ("submissions", "show", SUBMISSION_ID)),
)
#: Every command starts within this many seconds (median).
TARGET_S = 0.5
#: ``jobhooks --help`` lists the commands without importing any of them: it has less to do.
HELP_TARGET_S = 0.3


def target_s(command: str) -> float:
    """Return the median start-up a command is held to, in seconds."""
    return HELP_TARGET_S if command == "--help" else TARGET_S


@dataclass(frozen=True, slots=True)
class StartupRun:
    """The wall times of one command over ``runs`` fresh processes."""

    command: str
    runs: int
    median_s: float
    p90_s: float
    max_s: float
    min_s: float

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def _run(args: tuple[str, ...], env: Mapping[str, str]) -> float:
    """Run ``jobhooks ARGS`` once; return its wall time, or fail with what it said."""
    started = time.perf_counter()
    done = subprocess.run(
        jobhooks_command(*args), cwd=ROOT, env=dict(env), capture_output=True, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        message = f"jobhooks {' '.join(args)} exited {done.returncode}: {done.stderr.decode()}"
        raise RuntimeError(message)
    return seconds


def run_startup_suite(
    *,
    runs: int,
    workdir: Path,
    progress: Callable[[str], None],
    extra_env: Mapping[str, str] | None = None,
) -> list[StartupRun]:
    """Time each command of :data:`COMMANDS` over ``runs`` fresh processes."""
    database = Database("sqlite", f"sqlite:///{workdir / 'startup.db'}")
    database.reset()
    env = service_env(database, **(extra_env or {}))
    _run(
        (
            "submissions",
            "add",
            SUBMISSION_ID,
            "--user-id",
            "user_startup",
            "--input",
            "https://uploads.example.com/startup.mp4",
        ),
        env,
    )
    for _, args in COMMANDS:
        _run(args, env)  # writes the bytecode caches; not counted
    times: dict[str, list[float]] = {name: [] for name, _ in COMMANDS}
    progress(f"startup: {len(COMMANDS)} commands x {runs} runs")
    for _ in range(runs):
        for name, args in COMMANDS:
            times[name].append(_run(args, env))
    return [
        StartupRun(
            command=name,
            runs=len(values),
            median_s=round(statistics.median(values), 3),
            p90_s=round(_p90(values), 3),
            max_s=round(max(values), 3),
            min_s=round(min(values), 3),
        )
        for name, values in times.items()
    ]
