"""`PORT=… make run` says what another shell exports, and its webhook URLs then reach it.

Without it, `jobhooks webhook-url` in a second shell prints a URL on 8000 (PUBLIC_URL's
development default follows PORT, which that shell does not have).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.processes import ROOT, base_env, free_port

EXPORT = "jobhooks: in another shell: "


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    """`make run` on a free port and a SQLite file of the test's own; stopped at the end."""
    env = base_env(
        {
            "PORT": str(free_port()),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}",
            "LOG_FORMAT": "text",
        }
    )
    venv = Path(sys.executable).parent.parent
    # -o: the venv the tests run in is used as it is, never reinstalled.
    process = subprocess.Popen(
        ["make", "--no-print-directory", f"VENV={venv}", "-o", f"{venv}/.installed", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    yield process, env
    os.killpg(process.pid, signal.SIGTERM)
    process.communicate(timeout=30)  # reads the rest, and closes the pipe


def _export_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    for _ in range(5):
        line = process.stdout.readline()
        if line.startswith(EXPORT):
            return line.removeprefix(EXPORT).strip()
    pytest.fail("make run did not say what another shell exports")


def _exported(line: str) -> dict[str, str]:
    """Run the printed line in a shell and return what it exported."""
    printed = subprocess.run(
        ["/bin/sh", "-c", f"{line}\nenv -0"],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pairs = (item.split("=", 1) for item in printed.split("\0") if "=" in item)
    return {key: value for key, value in pairs if key in {"APP_ENV", "PORT", "PUBLIC_URL"}}


def test_make_run_prints_the_exports_that_make_webhook_urls_reach_it(
    make_run: tuple[subprocess.Popen[str], dict[str, str]],
) -> None:
    process, env = make_run
    exported = _exported(_export_line(process))
    assert exported == {"APP_ENV": "development", "PORT": env["PORT"]}

    _wait_ready(env["PORT"], timeout=60)  # migrated and serving
    # The other shell: its own environment, the exports, and the same database.
    other = base_env({**exported, "DATABASE_URL": env["DATABASE_URL"]})
    added = subprocess.run(
        [
            *("jobhooks", "submissions", "add", "sub_1", "--user-id", "user_1"),
            *("--input", "https://example.com/uploads/sub_1.mp4"),
        ],
        env=other,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(added.stdout)["submission_id"] == "sub_1"
    url = subprocess.run(
        ["jobhooks", "webhook-url", "sub_1"],
        env=other,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert url.startswith(f"http://localhost:{env['PORT']}/")

    answer = httpx.post(
        url,
        json={
            "id": "job_1",
            "status": "succeeded",
            "metadata": {"submission_id": "sub_1", "user_id": "user_1"},
            "output": {"url": "https://cdn.example.com/job_1.mp4"},
        },
    )
    assert answer.json()["outcome"] == "applied"


def _wait_ready(port: str, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"make run did not serve on :{port} within {timeout:.0f}s")


def test_the_line_names_public_url_when_it_is_set(tmp_path: Path) -> None:
    """A PUBLIC_URL given to make run (a tunnel, say) is what the other shell needs too."""
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    echo = next(line for line in done.stdout.splitlines() if EXPORT in line)
    printed = subprocess.run(
        ["/bin/sh", "-c", echo],
        env={"PATH": os.environ["PATH"], "PORT": "9101", "PUBLIC_URL": "https://x.example"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = printed.strip().removeprefix(EXPORT)
    assert shlex.split(line)[1:] == [
        "APP_ENV=development",
        "PORT=9101",
        "PUBLIC_URL=https://x.example",
    ]
