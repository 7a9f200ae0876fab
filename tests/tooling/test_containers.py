"""The Dockerfile and compose.yaml run what the Procfile runs, from the lock, as no root.

Docker itself is not needed: the files are read and checked against the Procfile, the lock
and the settings (building the image is left to a machine with Docker).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.settings import Settings
from devtools.processes import procfile_command

ROOT = Path(__file__).resolve().parents[2]


def dockerfile(text: str | None = None) -> list[tuple[str, str]]:
    """Return the Dockerfile's instructions as (KEYWORD, arguments), continuations joined."""
    text = (ROOT / "Dockerfile").read_text() if text is None else text
    joined = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _command(value: str | list[str]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else value


def test_the_image_is_python_3_11_slim_as_python_version_says() -> None:
    froms = [args for keyword, args in dockerfile() if keyword == "FROM"]
    assert len(froms) == 1
    version = (ROOT / ".python-version").read_text().strip()
    assert re.fullmatch(rf"python:{re.escape(version)}(\.\d+)?-slim(-\w+)?", froms[0])


def test_the_default_command_is_the_procfiles_web_line() -> None:
    (cmd,) = [args for keyword, args in dockerfile() if keyword == "CMD"]
    assert json.loads(cmd) == shlex.split(procfile_command("web"))


def test_the_image_installs_the_lock_without_resolving() -> None:
    runs = " ".join(args for keyword, args in dockerfile() if keyword == "RUN")
    assert "pip install --no-deps -r" in runs
    copies = [args for keyword, args in dockerfile() if keyword == "COPY"]
    assert copies[0].split()[0] == "requirements.txt"
    # Every pin of the lock is what gets installed: only the project line is left out.
    assert "grep -v '^-e '" in runs
    assert "pip install --no-deps ." in runs


def test_leaving_out_the_project_line_leaves_every_pin_of_the_lock() -> None:
    """The Dockerfile installs the lock without its `-e .` line: the rest must be all pins."""
    lines = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert [line for line in lines if line.startswith("-e ")] == ["-e ."]
    pins = [line for line in lines if not line.startswith("-e ")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\[\],-]+==\S+( ; .+)?", p) for p in pins)


def test_the_processes_run_as_a_user_that_is_not_root() -> None:
    instructions = dockerfile()
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1] not in {"root", "0", "0:0"}
    # The user is set before the command, so that every process runs as it.
    keywords = [keyword for keyword, _ in instructions]
    assert keywords.index("USER") < keywords.index("CMD")


def test_the_port_comes_from_port() -> None:
    """gunicorn binds $PORT through config/gunicorn.py; the image binds nothing itself."""
    (cmd,) = [args for keyword, args in dockerfile() if keyword == "CMD"]
    assert "--bind" not in cmd and "-b" not in json.loads(cmd)
    assert any(k == "ENV" and re.search(r"\bPORT=8000\b", a) for k, a in dockerfile())


def test_the_parser_sees_what_a_dockerfile_says() -> None:
    """The checks above read the file through this parser: it must not miss an instruction."""
    parsed = dockerfile('FROM a\n# USER root\nRUN x \\\n    && y\nUSER app\nCMD ["b"]\n')
    assert parsed == [("FROM", "a"), ("RUN", "x      && y"), ("USER", "app"), ("CMD", '["b"]')]


def test_the_image_leaves_local_state_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".env", "instance", "*.egg-info", ".git"} <= set(ignored)


def test_compose_runs_the_procfiles_worker_and_release() -> None:
    services = compose()["services"]
    assert _command(services["worker"]["command"]) == shlex.split(procfile_command("worker"))
    assert _command(services["release"]["command"]) == shlex.split(procfile_command("release"))
    # web runs the image's command, the Procfile's web line, unless it names the same.
    web = services["web"].get("command", shlex.split(procfile_command("web")))
    assert _command(web) == shlex.split(procfile_command("web"))


def test_compose_migrates_before_web_and_worker_start() -> None:
    services = compose()["services"]
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["release"] == {
            "condition": "service_completed_successfully"
        }
    assert services["release"]["depends_on"]["db"] == {"condition": "service_healthy"}
    assert "healthcheck" in services["db"]
    assert services["db"]["image"].startswith("postgres:")


def test_compose_runs_every_process_on_the_same_postgresql() -> None:
    services = compose()["services"]
    urls = {services[name]["environment"]["DATABASE_URL"] for name in ("web", "worker", "release")}
    (url,) = urls
    assert url.startswith("postgresql://") and "@db:" in url
    assert all(services[name].get("build") == "." for name in ("web", "worker", "release"))


@pytest.mark.parametrize("name", ["web", "worker", "release"])
def test_compose_environment_is_a_working_configuration(name: str) -> None:
    """With nothing set in the shell, the processes start (the image sets PORT=8000)."""
    environment = compose()["services"][name]["environment"]
    unset_in_shell = {
        key: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
        for key, value in environment.items()
        if value is not None  # `KEY:` passes the shell's value on, and nothing when unset
    }
    settings = Settings.from_env({"PORT": "8000", **unset_in_shell})
    assert settings.env == "development"
    assert settings.public_url == "http://localhost:8000"  # the port compose publishes
    assert "8000:8000" in compose()["services"]["web"]["ports"]
