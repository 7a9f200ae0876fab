"""gunicorn's control socket is off: servers side by side cannot remove each other's.

Recent gunicorn (27 here) opens a control socket at one path per user by default
(``$XDG_RUNTIME_DIR/gunicorn.ctl``, else ``~/.gunicorn/gunicorn.ctl``), so the demo's gunicorn
stopping would remove the socket of a ``make run`` beside it. config/gunicorn.py turns it off.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from devtools.processes import WebProcess


@pytest.mark.parametrize("runtime_dir", [False, True], ids=["home", "xdg-runtime-dir"])
def test_the_web_process_opens_no_control_socket(
    gunicorn: Callable[..., WebProcess], tmp_path: Path, runtime_dir: bool
) -> None:
    env = {"APP_ENV": "development", "DATABASE_URL": f"sqlite:///{tmp_path}/jobhooks.db"}
    if runtime_dir:
        (tmp_path / "run").mkdir()
        env["XDG_RUNTIME_DIR"] = str(tmp_path / "run")
    web = gunicorn(env)  # HOME is tmp_path; started means /readyz answered
    assert web.running
    assert list(tmp_path.rglob("gunicorn.ctl")) == []
