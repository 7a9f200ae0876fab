"""Deployment files: the lock Heroku installs, .python-version, app.json and .env.example.

The lock checks need no network: they compare requirements.txt with pyproject.toml through the
requirements of the distributions installed in this virtualenv (which ``make`` installs from
the lock), so a dependency added, removed or re-pinned without ``make lock`` is caught here.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker, default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from config.settings import ConfigError, Settings
from devtools.processes import ROOT

LOCK = ROOT / "requirements.txt"
PYPROJECT = ROOT / "pyproject.toml"
RELOCK = "run `make lock`"

#: Finds what is installed; None when it is not (tests pass the real one).
Installed = Callable[[str], metadata.Distribution | None]


def installed_distribution(name: str) -> metadata.Distribution | None:
    """Return the distribution ``name`` installed in this virtualenv, or None."""
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


@dataclass
class Lock:
    """What requirements.txt pins for this platform, and what it installs in place."""

    pins: dict[NormalizedName, Version] = field(default_factory=dict)
    editables: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _marker_applies(marker: Marker | None, extras: Iterable[str] = ()) -> bool:
    if marker is None:
        return True
    environment = {key: str(value) for key, value in default_environment().items()}
    return any(marker.evaluate({**environment, "extra": extra}) for extra in {"", *extras})


def parse_lock(text: str) -> Lock:
    """Read the pins of a requirements.txt that apply to this interpreter and platform."""
    lock = Lock()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.partition("#")[0].strip()
        if not line:
            continue
        if line.startswith(("-e ", "--editable ")):
            lock.editables.append(line.split(maxsplit=1)[1])
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            lock.problems.append(f"requirements.txt line {number} is not a requirement: {line}")
            continue
        pinned = [spec for spec in requirement.specifier if spec.operator == "=="]
        if len(pinned) != 1 or len(requirement.specifier) != 1 or "*" in pinned[0].version:
            lock.problems.append(f"requirements.txt line {number} is not pinned: {line}")
            continue
        if _marker_applies(requirement.marker):
            lock.pins[canonicalize_name(requirement.name)] = Version(pinned[0].version)
    return lock


def lock_problems(pyproject: Mapping[str, Any], lock_text: str, installed: Installed) -> list[str]:
    """Say how requirements.txt differs from what pyproject.toml's runtime dependencies need.

    Walks the requirement graph from pyproject.toml's ``dependencies`` through the installed
    distributions' own requirements (markers and extras evaluated here), so every package
    reached must be pinned at a version its dependants accept, and every pin must be reached.
    """
    lock = parse_lock(lock_text)
    problems = list(lock.problems)
    if "." not in lock.editables:
        problems.append(
            "requirements.txt does not install the project itself (`-e .`), so Heroku would "
            f"have no `jobhooks` command: {RELOCK}"
        )
    queue = [(Requirement(text), "pyproject.toml") for text in pyproject["project"]["dependencies"]]
    walked: set[tuple[NormalizedName, frozenset[str]]] = set()
    reached: set[NormalizedName] = set()
    while queue:
        requirement, wanted_by = queue.pop()
        name = canonicalize_name(requirement.name)
        version = lock.pins.get(name)
        if version is None:
            problems.append(
                f"{name} (wanted by {wanted_by}: {requirement}) is not pinned in "
                f"requirements.txt: {RELOCK}"
            )
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            problems.append(
                f"requirements.txt pins {name}=={version}, outside the "
                f"{requirement.specifier} that {wanted_by} wants: {RELOCK}"
            )
        reached.add(name)
        if (name, frozenset(requirement.extras)) in walked:
            continue
        walked.add((name, frozenset(requirement.extras)))
        distribution = installed(name)
        if distribution is None:
            problems.append(f"{name} is pinned but not installed: run `make`")
            continue
        for text in distribution.requires or ():
            child = Requirement(text)
            if _marker_applies(child.marker, requirement.extras):
                queue.append((child, name))
    problems.extend(
        f"requirements.txt pins {name}, which no runtime dependency needs any more: {RELOCK}"
        for name in sorted(lock.pins.keys() - reached)
    )
    return problems


def venv_problems(lock_text: str, installed: Installed) -> list[str]:
    """Say where the installed versions differ from the pins of requirements.txt."""
    problems = []
    for name, version in sorted(parse_lock(lock_text).pins.items()):
        distribution = installed(name)
        if distribution is None:
            problems.append(f"{name}=={version} is pinned but not installed: run `make`")
        elif Version(distribution.version) != version:
            problems.append(
                f"{name} {distribution.version} is installed, requirements.txt pins {version}: "
                "run `make` (or `make lock` if pyproject.toml asks for the installed one)"
            )
    return problems


def _pyproject() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))


def _lock_text() -> str:
    return LOCK.read_text(encoding="utf-8")


# --- the lock --------------------------------------------------------------------------------


def test_lock_pins_exactly_the_runtime_dependencies() -> None:
    assert lock_problems(_pyproject(), _lock_text(), installed_distribution) == []


def test_the_virtualenv_has_the_pinned_versions() -> None:
    assert venv_problems(_lock_text(), installed_distribution) == []


def test_lock_leaves_out_the_dev_and_bench_extras() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    tools = {
        canonicalize_name(Requirement(text).name) for group in extras.values() for text in group
    }
    assert {"pytest", "mypy", "ruff", "uv", "py-spy"} <= tools
    # packaging is a dev extra (tests read the lock with it) and also comes with the runtime:
    # opentelemetry-instrumentation needs it. Every other tool stays out of the lock.
    runtime_too = {"packaging"}
    assert not (tools - runtime_too) & parse_lock(_lock_text()).pins.keys()


def _pyproject_requirement(name: str) -> Requirement:
    dependencies = [Requirement(text) for text in _pyproject()["project"]["dependencies"]]
    return next(r for r in dependencies if canonicalize_name(r.name) == name)


def _repin(lock_text: str, name: str, version: str) -> str:
    repinned = re.sub(rf"(?m)^{name}==\S+", f"{name}=={version}", lock_text)
    assert f"\n{name}=={version}" in repinned
    return repinned


def test_a_dependency_added_without_relocking_is_caught() -> None:
    pyproject = _pyproject()
    # A name the lock cannot hold, so this stays true whatever is added later.
    pyproject["project"]["dependencies"].append("jobhooks-example-addition>=1.0")
    problems = lock_problems(pyproject, _lock_text(), installed_distribution)
    assert problems == [
        "jobhooks-example-addition (wanted by pyproject.toml: jobhooks-example-addition>=1.0) "
        "is not pinned in requirements.txt: " + RELOCK
    ]


def test_a_pin_outside_the_projects_specifier_is_caught() -> None:
    lock_text = _repin(_lock_text(), "flask", "0.1")
    problems = lock_problems(_pyproject(), lock_text, installed_distribution)
    specifier = _pyproject_requirement("flask").specifier
    # Other dependencies that want flask (spectree) report the same pin as well.
    assert (
        f"requirements.txt pins flask==0.1, outside the {specifier} that pyproject.toml wants: "
        + RELOCK
    ) in problems
    assert all(problem.startswith("requirements.txt pins flask==0.1, ") for problem in problems)
    installed = metadata.version("flask")
    assert venv_problems(lock_text, installed_distribution) == [
        f"flask {installed} is installed, requirements.txt pins 0.1: "
        "run `make` (or `make lock` if pyproject.toml asks for the installed one)"
    ]


def test_a_transitive_pin_outside_its_dependants_specifier_is_caught() -> None:
    lock_text = _repin(_lock_text(), "werkzeug", "0.1")
    problems = lock_problems(_pyproject(), lock_text, installed_distribution)
    # One problem per dependant that wants werkzeug (flask, Flask-Login), none about others.
    assert problems
    assert all(p.startswith("requirements.txt pins werkzeug==0.1, outside the ") for p in problems)
    assert any(p.endswith(" that flask wants: " + RELOCK) for p in problems)


def test_pins_left_over_from_removed_dependencies_are_caught() -> None:
    pyproject = _pyproject()
    pyproject["project"]["dependencies"] = [
        "flask" + str(_pyproject_requirement("flask").specifier)
    ]
    problems = lock_problems(pyproject, _lock_text(), installed_distribution)
    left_over = {p.split()[2].rstrip(",") for p in problems}
    assert all(
        p.endswith("which no runtime dependency needs any more: " + RELOCK) for p in problems
    )
    assert left_over < parse_lock(_lock_text()).pins.keys()
    assert {"gunicorn", "sqlalchemy", "httpx", "httpcore"} <= left_over
    assert not {"flask", "werkzeug", "jinja2"} & left_over  # flask still needs them


def test_an_unpinned_line_and_a_missing_project_line_are_caught() -> None:
    lock_text = re.sub(r"(?m)^itsdangerous==\S+$", "itsdangerous>=2.2", _lock_text())
    lock_text = re.sub(r"(?m)^-e \.$", "", lock_text)
    problems = lock_problems(_pyproject(), lock_text, installed_distribution)
    unpinned = r"requirements.txt line \d+ is not pinned: itsdangerous>=2.2"
    assert any(re.match(unpinned, p) for p in problems)
    assert any("does not install the project itself" in p for p in problems)


def test_the_lock_says_how_it_was_made_and_make_lock_makes_it_so() -> None:
    header = _lock_text().splitlines()[:2]
    assert header[0] == "# This file was autogenerated by uv via the following command:"
    command = header[1].removeprefix("#").strip()
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"(?ms)^lock:.*?\n\n", makefile)
    assert recipe is not None
    recipe_command = " ".join(recipe.group(0).replace("\\\n", " ").split())
    python_version = (ROOT / ".python-version").read_text(encoding="utf-8").strip()
    expected = recipe_command[recipe_command.index("uv pip compile") :]
    expected = expected.replace("$$(cat .python-version)", python_version)
    expected = expected.replace(" --quiet $(LOCK_ARGS)", "")
    assert command == expected
    assert re.search(r"(?m)^-e \.$", (ROOT / "requirements.in").read_text(encoding="utf-8"))


def test_python_version_is_the_one_everything_else_names() -> None:
    version = (ROOT / ".python-version").read_text(encoding="utf-8").strip()
    # Heroku's buildpack takes N.N (the latest patch release) or N.N.N.
    assert re.fullmatch(r"3\.\d+", version), version
    pyproject = _pyproject()
    assert SpecifierSet(pyproject["project"]["requires-python"]).contains(f"{version}.0")
    assert pyproject["tool"]["mypy"]["python_version"] == version
    assert pyproject["tool"]["ruff"]["target-version"] == "py" + version.replace(".", "")
    # The tests run on the Python that is deployed.
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == version


# --- app.json --------------------------------------------------------------------------------


def _app_json() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "app.json").read_text(encoding="utf-8"))
    return loaded


def _procfile_processes() -> list[str]:
    lines = (ROOT / "Procfile").read_text(encoding="utf-8").splitlines()
    return [line.partition(":")[0].strip() for line in lines if ":" in line]


def _deployment_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"(?ms)^## Deployment \(Heroku-style\)\n(.*?)(?=^## )", readme)
    assert match is not None, "README has no Deployment (Heroku-style) section"
    return match.group(1)


def test_app_json_attaches_postgres_and_generates_the_secrets() -> None:
    app = _app_json()
    assert app["name"] == "jobhooks"
    assert app["description"]
    addons = [a if isinstance(a, str) else a["plan"] for a in app["addons"]]
    assert [a.partition(":")[0] for a in addons] == ["heroku-postgresql"]
    env = app["env"]
    assert env["APP_ENV"]["value"] == "production"
    for generated in ("SECRET_KEY", "METRICS_TOKEN"):
        assert env[generated]["generator"] == "secret", generated
    for asked in ("PUBLIC_URL", "ITTYBIT_API_KEY"):
        assert env[asked]["required"] is True, asked
    # Without it the per-submission URLs still work; only the project-level URL needs it.
    assert env["ITTYBIT_WEBHOOK_SECRET"]["required"] is False
    assert all(spec["description"] for spec in env.values())


def test_app_json_formation_is_the_procfiles_processes() -> None:
    processes = _procfile_processes()
    assert "release" in processes  # migrations run in the release phase, not in app.json
    formation = _app_json()["formation"]
    assert sorted(formation) == sorted(p for p in processes if p != "release")
    assert {name: spec["quantity"] for name, spec in formation.items()} == {"web": 1, "worker": 1}
    assert "scripts" not in _app_json()


def test_app_json_environment_starts_the_service_in_production() -> None:
    environ = {"DATABASE_URL": "postgres://user:pw@db.example.com:5432/d1"}  # set by the addon
    for name, spec in _app_json()["env"].items():
        if "value" in spec:
            environ[name] = spec["value"]
        elif spec.get("generator") == "secret":
            environ[name] = secrets.token_hex(32)  # what Heroku's generator makes
    environ["PUBLIC_URL"] = "https://jobhooks-demo.herokuapp.com"
    environ["ITTYBIT_API_KEY"] = "ittybit-key"
    settings = Settings.from_env(environ)
    assert settings.env == "production"
    assert settings.database_url.startswith("postgresql")
    assert settings.metrics_token == environ["METRICS_TOKEN"]
    del environ["SECRET_KEY"]
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Settings.from_env(environ)


def test_readme_deployment_follows_app_json() -> None:
    section = _deployment_section()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    configuration = readme[readme.index("## Configuration") : readme.index("## Webhook endpoints")]
    for name in _app_json()["env"]:
        assert f"`{name}`" in configuration, f"{name} is not in the Configuration table"
        assert name in section, f"{name} is not in the Deployment section"
    config_sets = re.findall(r"heroku config:set((?:[^\n]*\\\n)*[^\n]*)", section)
    set_names = {name for command in config_sets for name in re.findall(r"\b([A-Z_]+)=", command)}
    assert {"APP_ENV", "SECRET_KEY", "ITTYBIT_WEBHOOK_SECRET"} <= set_names
    for name in set_names:
        assert f"`{name}`" in configuration, f"the Deployment section sets an unknown {name}"
    for step in (
        "heroku create",
        "heroku addons:create heroku-postgresql",
        "heroku config:set",
        "openssl rand -hex 32",
        "git push heroku main",
        "heroku ps:scale worker=1",
        "/webhooks/ittybit",
        "jobhooks ittybit connect",
        "whsec_",
        "jobhooks trigger",
        "jobhooks doctor",
        "heroku logs",
        "https://www.herokucdn.com/deploy/button.svg",
    ):
        assert step in section, step


# --- .env.example ----------------------------------------------------------------------------


def _dotenv(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def test_env_example_is_a_working_development_configuration() -> None:
    values = _dotenv(ROOT / ".env.example")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in values:
        assert f"`{name}`" in readme, f"{name} is not documented"
    settings = Settings.from_env(values)
    assert settings.env == "development"
    assert settings.ittybit_api_url.startswith("http://127.0.0.1:")


def test_a_real_env_file_stays_out_of_git() -> None:
    def ignored(path: str) -> bool:
        check = subprocess.run(
            ["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT, check=False
        )
        assert check.returncode in (0, 1), check
        return check.returncode == 0

    assert ignored(".env")
    assert not ignored(".env.example")
