"""``.ci/install-chromium``, which ``.ci/run`` calls: install Chromium only when it is missing.

Run against a fake ``apt-get`` (and, for the non-root case, a fake ``id``) on ``PATH`` that
records what it was asked and "installs" by creating the two executables.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from devtools.processes import ROOT

SCRIPT = ROOT / ".ci" / "install-chromium"

FAKE_APT = """#!/bin/sh
echo "$*" >> "$FAKE_LOG"
case "$1" in
  update) touch "$FAKE_DIR/updated" ;;
  install)
    if [ -n "$FAKE_NEEDS_UPDATE" ] && [ ! -e "$FAKE_DIR/updated" ]; then exit 100; fi
    if [ -z "$FAKE_INSTALLS_NOTHING" ]; then
      printf '#!/bin/sh\\n' > "$FAKE_CHROMIUM"; chmod +x "$FAKE_CHROMIUM"
      printf '#!/bin/sh\\n' > "$FAKE_DRIVER"; chmod +x "$FAKE_DRIVER"
    fi ;;
esac
"""


def _run(tmp_path: Path, **env: str) -> tuple[int, str, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    apt = bin_dir / "apt-get"
    apt.write_text(FAKE_APT)
    apt.chmod(0o755)
    log = tmp_path / "apt.log"
    chromium, driver = tmp_path / "chromium", tmp_path / "chromedriver"
    environ = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "CHROMIUM": str(chromium),
        "CHROMEDRIVER": str(driver),
        "APT_GET": str(apt),
        "FAKE_LOG": str(log),
        "FAKE_DIR": str(tmp_path),
        "FAKE_CHROMIUM": str(chromium),
        "FAKE_DRIVER": str(driver),
        **env,
    }
    done = subprocess.run(
        ["bash", str(SCRIPT)], env=environ, capture_output=True, text=True, timeout=30, check=False
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return done.returncode, done.stdout + done.stderr, calls


def _executable(path: Path) -> None:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)


def test_nothing_is_installed_when_both_are_there(tmp_path: Path) -> None:
    _executable(tmp_path / "chromium")
    _executable(tmp_path / "chromedriver")
    code, output, calls = _run(tmp_path)
    assert (code, calls) == (0, [])
    assert "are installed" in output


def test_a_missing_driver_installs_both_packages(tmp_path: Path) -> None:
    _executable(tmp_path / "chromium")
    code, _, calls = _run(tmp_path)
    assert code == 0
    assert calls == ["install -y -qq chromium chromium-driver"]
    assert os.access(tmp_path / "chromedriver", os.X_OK)


def test_the_package_lists_are_refreshed_when_the_first_install_fails(tmp_path: Path) -> None:
    code, _, calls = _run(tmp_path, FAKE_NEEDS_UPDATE="1")
    assert code == 0
    assert calls == [
        "install -y -qq chromium chromium-driver",
        "update -qq",
        "install -y -qq chromium chromium-driver",
    ]


def test_an_install_that_leaves_them_missing_fails(tmp_path: Path) -> None:
    code, output, _ = _run(tmp_path, FAKE_INSTALLS_NOTHING="1")
    assert code == 1
    assert "still missing" in output


def test_without_root_or_sudo_it_fails_and_says_why(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("id", "echo 1000"), ("sudo", "exit 1")):
        _executable(bin_dir / name)
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
    code, output, calls = _run(tmp_path)
    assert (code, calls) == (1, [])
    assert "installing needs root" in output


def test_ci_run_installs_chromium_before_the_tests() -> None:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    install = lines.index("bash .ci/install-chromium")
    assert install < lines.index("make test")
