"""Commands load only what they use, and ``--help`` needs no configuration.

How fast a command starts is measured by ``make bench`` (``bench/startup.py``), never here:
a timed test fails on a busy machine and passes on a fast one. What these tests hold is the
cause of a slow start: each runs the real console script in a fresh process under
``python -X importtime`` and reads which modules it imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from receiver.cli import cli as jobhooks_cli

BIN = Path(sys.executable).parent
#: Loaded only by the web surfaces or the commands that use them: never by `--help` or
#: `submissions show`.
NOT_FOR_SHOW = (
    "alembic",
    "httpx",
    "prometheus_client",
    "spectree",
    "flask_login",
    "flask_wtf",
    "wtforms",
    "rich",
    "receiver.api",
    "receiver.admin",
    "receiver.webhooks",
    "receiver.metrics",
    "receiver.migrate",
    "receiver.ittybit",
    "reconcile.poller",
    "reconcile.notifier",
)
#: What a command that reads the database needs: `--help` needs none of it.
NOT_FOR_HELP = (
    *NOT_FOR_SHOW,
    "sqlalchemy",
    "sqlmodel",
    "pydantic",
    "pydantic_settings",
    "pythonjsonlogger",
    "config.settings",
    "receiver.models",
    "receiver.db",
)


def run_jobhooks(
    args: list[str], env: dict[str, str], cwd: Path
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the console script under ``-X importtime``; return it and the modules it imported."""
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), **env}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(BIN / "jobhooks"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and not line.endswith("imported package")
    }
    return done, modules


def test_help_needs_no_configuration_and_loads_nothing_heavy(tmp_path: Path) -> None:
    # Production (APP_ENV unset) without SECRET_KEY: any command that runs stops with exit 2.
    done, modules = run_jobhooks(["--help"], {}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Usage: jobhooks" in done.stdout
    for name in ("submissions", "reconcile", "notify", "routes"):
        assert f"\n  {name} " in done.stdout
    assert "receiver.cli" in modules  # the check sees what was imported
    assert sorted(set(NOT_FOR_HELP) & modules) == []


def test_a_real_command_still_needs_its_configuration(tmp_path: Path) -> None:
    done, _ = run_jobhooks(["submissions", "show", "sub_1"], {}, tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    said = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert len(said) == 1, said
    assert said[0].startswith("jobhooks: configuration error: SECRET_KEY: ")


def _command_paths() -> list[tuple[str, ...]]:
    """Return every command and subcommand of ``jobhooks``, as the words that name it."""
    ctx = click.Context(jobhooks_cli, info_name="jobhooks")
    found: list[tuple[str, ...]] = []
    for name in jobhooks_cli.list_commands(ctx):
        command = jobhooks_cli.get_command(ctx, name)
        found.append((name,))
        if isinstance(command, click.Group):
            found += [(name, sub) for sub in command.list_commands(ctx)]
    return found


def test_every_help_needs_no_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("APP_ENV", "SECRET_KEY", "DATABASE_URL", "PUBLIC_URL", "FLASK_APP"):
        monkeypatch.delenv(name, raising=False)
    # The group sets FLASK_RUN_FROM_CLI; monkeypatch puts it back as it was afterwards.
    monkeypatch.setenv("FLASK_RUN_FROM_CLI", "")
    paths = _command_paths()
    assert ("notify", "list") in paths
    assert ("submissions", "show") in paths
    runner = CliRunner()
    for path in [(), *paths]:
        result = runner.invoke(jobhooks_cli, [*path, "--help"], prog_name="jobhooks")
        assert result.exit_code == 0, (path, result.output)
        assert result.output.startswith(f"Usage: {' '.join(('jobhooks', *path))} "), path
