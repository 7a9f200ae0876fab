"""The package installed from its wheel (``pip install .``, as a container build does) works.

Installed without ``-e``, nothing of the checkout is there: the migrations, their template and
the admin view's templates and static files must travel inside the wheel. The wheel is built
without build isolation (the dev extra brings a recent setuptools) and installed into a fresh
venv with ``--no-deps``; the runtime dependencies come from the project's venv, which holds
exactly the lock, through a path file, so that nothing is fetched from the network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import create_test_database, drop_test_database, postgres_url

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
#: The tables the migrations make, a few of them: enough to see that they ran.
TABLES = {"alembic_version", "submissions", "webhook_events", "notifications", "admin_users"}


def _project_files() -> list[str]:
    """Return the checkout's files as a clone has them: tracked, or new and not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a clean copy of the project, as a container build sees it.

    Built in the checkout, the wheel would take files listed by a leftover ``*.egg-info`` of
    the editable install, and hide a missing ``package-data`` entry.
    """
    source = tmp_path_factory.mktemp("source")
    for name in _project_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-index", "--no-deps"),
            *("--no-build-isolation", "-w", str(out), str(source)),
        ],
        check=True,
        cwd=out,
    )
    (built,) = out.glob("jobhooks-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh venv with the wheel installed, and the lock's packages from the project's venv."""
    path = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Appended after the venv's own site-packages: the wheel's `receiver` comes first. The
    # project's editable install is not loaded (path files inside that folder are not read).
    Path(site, "project-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"),
            *("--no-deps", "--no-index", str(wheel)),
        ],
        check=True,
        cwd=path,
    )
    return path


def test_the_wheel_carries_the_migrations_and_the_admin_views_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "receiver/store/migrations/env.py",
        "receiver/store/migrations/script.py.mako",
        "receiver/store/migrations/versions/0001_initial.py",
        "receiver/web/admin/static/admin.css",
    }
    assert expected <= names
    templates = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "receiver/web/admin/templates").rglob("*")
        if path.is_file()
    }
    assert templates, "the admin view has templates"
    assert templates <= names
    assert not any(name.startswith("migrations/") for name in names)


def _upgrade(venv: Path, database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "APP_ENV": "development",
        "DATABASE_URL": database_url,
        "LOG_FORMAT": "text",
    }
    return subprocess.run(
        [str(venv / "bin" / "jobhooks"), "db", "upgrade"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _tables(database_url: str) -> set[str]:
    engine = sa.create_engine(database_url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_installed_package_is_the_wheels(venv: Path, tmp_path: Path) -> None:
    """The checks below run the wheel's code, not the checkout's."""
    found = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import receiver; print(receiver.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found).is_relative_to(venv)


def test_db_upgrade_from_the_wheel_migrates_sqlite(venv: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    done = _upgrade(venv, url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _tables(url) >= TABLES


@pytest.fixture
def scratch_postgres() -> Iterator[str]:
    server = postgres_url()
    if server is None:
        pytest.skip("PostgreSQL tests need TEST_DATABASE_URL")
    url = create_test_database(server)
    yield url
    drop_test_database(url)


@pytest.mark.postgres
def test_db_upgrade_from_the_wheel_migrates_postgresql(
    venv: Path, tmp_path: Path, scratch_postgres: str
) -> None:
    done = _upgrade(venv, scratch_postgres, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _tables(scratch_postgres) >= TABLES
