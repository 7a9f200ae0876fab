"""Start the service's own processes for end-to-end runs: the Procfile's web line, jobhooks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import httpx

__all__ = [
    "ROOT",
    "WebProcess",
    "WorkerProcess",
    "base_env",
    "free_port",
    "jobhooks_command",
    "procfile_command",
]

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def procfile_command(process: str, procfile: Path = ROOT / "Procfile") -> str:
    """Return the command line of ``process`` (``web``, ``worker``…) in the Procfile."""
    for line in procfile.read_text(encoding="utf-8").splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() == process:
            return command.strip()
    message = f"no {process!r} process in {procfile}"
    raise LookupError(message)


def base_env(extra: Mapping[str, str]) -> dict[str, str]:
    """Return a clean environment for the service: PATH with this venv first, plus ``extra``.

    Nothing else is inherited, so a developer's own DATABASE_URL or SECRET_KEY cannot leak in.
    """
    bin_dir = str(Path(sys.executable).parent)
    env = {
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "/usr/bin:/bin")]),
        "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108 - only a fallback for $HOME
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


def jobhooks_command(*args: str) -> list[str]:
    """Return the argv of ``jobhooks ARGS``, the console script of this interpreter's venv."""
    return [str(Path(sys.executable).parent / "jobhooks"), *args]


class WebProcess:
    """The Procfile's ``web`` process (gunicorn), started and stopped like a dyno."""

    def __init__(
        self, env: Mapping[str, str], *, log_path: Path, cwd: Path = ROOT, command: str = ""
    ) -> None:
        if "PORT" not in env:
            message = "the web process needs PORT in its environment"
            raise ValueError(message)
        self.env = dict(env)
        self.port = int(env["PORT"])
        self.log_path = log_path
        self.cwd = cwd
        self.command = command or procfile_command("web", cwd / "Procfile")
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """Return the gunicorn master's process id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, *, timeout: float = 30.0) -> None:
        """Start gunicorn and wait until ``/readyz`` answers 200."""
        if self.running:
            return
        self._log = self.log_path.open("ab")
        # exec: the shell becomes gunicorn, so signals reach its master directly.
        self._process = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {self.command}"],
            cwd=self.cwd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_ready(timeout=timeout)

    def wait_ready(self, *, timeout: float) -> None:
        """Wait for ``/readyz``; raise RuntimeError with the log's tail if it never comes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                message = f"the web process exited early:\n{self.log_tail()}"
                raise RuntimeError(message)
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        message = f"the web process was not ready after {timeout:.0f}s:\n{self.log_tail()}"
        raise RuntimeError(message)

    def stop(self, *, timeout: float = 30.0) -> None:
        """Stop gracefully (SIGTERM, as Heroku does); kill the group if it hangs."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self, *, timeout: float = 30.0) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start(timeout=timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> WebProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WorkerProcess:
    """The Procfile's ``worker`` process (the reconcile loop, which also notifies)."""

    def __init__(self, env: Mapping[str, str], *, log_path: Path, cwd: Path = ROOT) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.command = procfile_command("worker", cwd / "Procfile")
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """Return the worker's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def start(self, *, ready: str = "reconciling every", timeout: float = 30.0) -> None:
        """Start the worker and wait until its log says ``ready``."""
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {self.command}"],
            cwd=self.cwd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while ready not in self.log_path.read_text(encoding="utf-8", errors="replace"):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                message = f"the worker did not start:\n{self.log_tail()}"
                raise RuntimeError(message)
            time.sleep(0.1)

    def stop(self, *, timeout: float = 30.0) -> int | None:
        """Stop it as Heroku does (SIGTERM); kill it if it hangs. Return its exit status."""
        process, self._process = self._process, None
        code = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
