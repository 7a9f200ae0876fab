"""Start-up exits: the real entry points, as subprocesses, stop with one line naming the variable.

Split from tests/unit/config/test_config.py, which holds the in-process settings tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


# --- the real entry points, as subprocesses ---------------------------------------------------


def run_entry_point(
    args: list[str], env: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(tmp_path)}
    full_env.update(env)
    return subprocess.run(
        args, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=60, check=False
    )


ENTRY_POINTS = {
    "jobhooks": [str(BIN / "jobhooks"), "submissions", "show", "x"],
    "gunicorn": [str(BIN / "gunicorn"), "-c", "config/gunicorn.py", "wsgi:app"],
}
DEV = {"APP_ENV": "development"}
BAD_ENVIRONMENTS = {
    "missing-secret": ({"APP_ENV": "production", "PUBLIC_URL": "https://h.example"}, "SECRET_KEY"),
    "bad-tolerance": ({**DEV, "WEBHOOK_TOLERANCE": "soon"}, "WEBHOOK_TOLERANCE"),
    "bad-database": ({**DEV, "DATABASE_URL": "postgres://u@h:port/x"}, "DATABASE_URL"),
    "bad-port": ({**DEV, "PORT": "http"}, "PORT"),
}


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("case", sorted(BAD_ENVIRONMENTS))
def test_entry_point_stops_with_one_line(entry_point: str, case: str, tmp_path: Path) -> None:
    env, variable = BAD_ENVIRONMENTS[case]
    env = {**env, "DATABASE_URL": env.get("DATABASE_URL", f"sqlite:///{tmp_path}/x.db")}
    result = run_entry_point(ENTRY_POINTS[entry_point], env, tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"jobhooks: configuration error: {variable}: ")
    assert result.stdout == ""
    if case == "missing-secret":
        assert "APP_ENV=development" in lines[0]
