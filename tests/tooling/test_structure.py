"""The house by role: imports run one way, from the edges down to the rules.

    receiver.cli ─┐
    receiver.web ─┼─▶ receiver.flows ─▶ receiver.store ─▶ receiver.core ─▶ config
    reconcile ────┘          │               ▲
                             └─▶ receiver.ittybit, receiver.observe

The composition roots wire the rooms together and are exempt: ``wsgi.py`` (outside the
packages), ``receiver/__init__.py`` (``create_app``) and gunicorn's process hooks in
``config/gunicorn.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSITION_ROOTS = {"config/gunicorn.py", "receiver/__init__.py"}
_LOW = {"config", "receiver.core"}
#: What each room may import of the project's own rooms (its own included).
ALLOWED: dict[str, set[str]] = {
    "config": {"config"},
    "receiver.core": _LOW,
    "receiver.store": _LOW | {"receiver.store"},
    "receiver.ittybit": _LOW | {"receiver.ittybit"},
    "receiver.observe": _LOW | {"receiver.store", "receiver.observe"},
    "receiver.flows": _LOW
    | {"receiver.store", "receiver.ittybit", "receiver.observe", "receiver.flows"},
    "reconcile": _LOW
    | {"receiver.store", "receiver.ittybit", "receiver.observe", "receiver.flows", "reconcile"},
    "receiver.web": _LOW
    | {"receiver.store", "receiver.ittybit", "receiver.observe", "receiver.flows", "receiver.web"},
    # The one command group is the composition root of the command line: it may wire anything.
    "receiver.cli": _LOW
    | {
        "receiver",
        "receiver.store",
        "receiver.ittybit",
        "receiver.observe",
        "receiver.flows",
        "receiver.cli",
        "reconcile",
    },
}
ROOMS = sorted(ALLOWED, key=len, reverse=True)


def room_of(module: str) -> str | None:
    """Return the room a dotted module name belongs to (``receiver`` alone is create_app)."""
    for room in ROOMS:
        if module == room or module.startswith(room + "."):
            return room
    return "receiver" if module == "receiver" else None


def imported_rooms(path: Path) -> set[str]:
    """Return the project rooms a module imports, wherever in the module it does."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            rooms = [room_of(alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from receiver.web import api` names its room in the imported name
            module = node.module
            rooms = [
                room
                if (room := room_of(f"{module}.{alias.name}")) not in (None, "receiver")
                else room_of(module)
                for alias in node.names
            ]
        else:
            continue
        found.update(room for room in rooms if room is not None)
    return found


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _sources() -> list[Path]:
    return sorted(
        path
        for package in ("config", "receiver", "reconcile")
        for path in (ROOT / package).rglob("*.py")
        if str(path.relative_to(ROOT)) not in COMPOSITION_ROOTS
    )


def test_every_module_lives_in_a_room() -> None:
    homeless = [str(p.relative_to(ROOT)) for p in _sources() if room_of(_module_name(p)) is None]
    assert homeless == []


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_imports_run_one_way(room: str) -> None:
    wrong = {}
    for path in _sources():
        if room_of(_module_name(path)) != room:
            continue
        extra = imported_rooms(path) - ALLOWED[room]
        if extra:
            wrong[str(path.relative_to(ROOT))] = sorted(extra)
    assert wrong == {}


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from reconcile.passes import Reconciler\n")
    assert imported_rooms(module) == {"reconcile"}


def test_the_check_sees_a_room_imported_by_name(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from receiver.web import api\nfrom receiver import flows\n")
    assert imported_rooms(module) == {"receiver.web", "receiver.flows"}


def test_a_rule_that_imports_storage_is_caught(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from receiver.store.models import Submission\n")
    assert imported_rooms(module) - ALLOWED["receiver.core"] == {"receiver.store"}


@pytest.mark.parametrize("room", sorted(set(ALLOWED) - {"config"}))
def test_each_room_says_what_lives_there(room: str) -> None:
    init = ROOT / room.replace(".", "/") / "__init__.py"
    docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    assert docstring, f"{init.relative_to(ROOT)} has no docstring"
    assert "import" in docstring.lower(), f"{room}'s docstring does not say what it may import"


#: "About a dozen" modules a folder, its ``__init__`` aside: past this, split it by role.
MOST_MODULES = 13
#: Alembic's revisions: one file per schema change, in order, never a room to split by role.
MIGRATIONS = ROOT / "receiver" / "store" / "migrations" / "versions"


def test_no_room_is_crowded() -> None:
    crowded = {
        str(folder.relative_to(ROOT)): count
        for folder in [ROOT / "receiver", ROOT / "reconcile", *(ROOT / "receiver").rglob("*/")]
        if folder.is_dir() and "__pycache__" not in folder.parts and folder != MIGRATIONS
        if (count := len(set(folder.glob("*.py")) - {folder / "__init__.py"})) > MOST_MODULES
    }
    assert crowded == {}


def test_the_migrations_are_the_only_folder_left_out_of_the_count() -> None:
    assert MIGRATIONS.is_dir()
    assert len(list(MIGRATIONS.glob("0*.py"))) > MOST_MODULES  # why it is left out


# --- the tests mirror the tree ----------------------------------------------------------------

TESTS = ROOT / "tests"
#: unit: in-process only (the bulk, `make test-fast`); process: gunicorn, subprocesses, the
#: browser; tooling: bench, the stand-in, deploy and CI files, these structure checks.
TEST_LAYERS = ("unit", "process", "tooling")
#: What a unit test may not import: it would start a process or a browser.
PROCESS_MODULES = {"subprocess", "selenium"}


def _test_files() -> list[Path]:
    return sorted(
        path
        for pattern in ("test_*.py", "*_test.py")
        for path in TESTS.rglob(pattern)
        if "__pycache__" not in path.parts
    )


def process_uses(path: Path) -> list[str]:
    """Return what in a test module starts a process: its imports and the gunicorn fixture."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        elif isinstance(node, ast.arg) and node.arg == "gunicorn":
            found.append("the gunicorn fixture")
            continue
        elif isinstance(node, ast.Constant) and node.value == "gunicorn":
            found.append('"gunicorn" (a fixture by name?)')
            continue
        else:
            continue
        found.extend(
            f"import {module}" for module in modules if module.split(".")[0] in PROCESS_MODULES
        )
    return found


def test_every_test_file_lives_in_a_layer() -> None:
    stray = [
        str(path.relative_to(ROOT))
        for path in _test_files()
        if path.relative_to(TESTS).parts[0] not in TEST_LAYERS
    ]
    assert stray == []


def test_every_test_folder_is_a_package() -> None:
    # Two rooms may hold a test_x.py each: as packages their module names differ.
    folders = {path.parent for path in _test_files()}
    bare = [
        str(folder.relative_to(ROOT)) for folder in folders if not (folder / "__init__.py").exists()
    ]
    assert bare == []


def test_unit_tests_start_no_process() -> None:
    wrong = {
        str(path.relative_to(ROOT)): uses
        for path in _test_files()
        if path.relative_to(TESTS).parts[0] == "unit"
        if (uses := process_uses(path))
    }
    assert wrong == {}


def test_the_layout_check_sees_a_process(tmp_path: Path) -> None:
    module = tmp_path / "test_m.py"
    module.write_text(
        "import subprocess\nfrom selenium.webdriver import Chrome\n\n"
        "def test_x(app, gunicorn):\n    pass\n"
    )
    assert process_uses(module) == [
        "import subprocess",
        "import selenium.webdriver",
        "the gunicorn fixture",
    ]
    module.write_text(
        "import pytest\n\n@pytest.mark.usefixtures('gunicorn')\ndef test_x():\n    pass\n"
    )
    assert process_uses(module) == ['"gunicorn" (a fixture by name?)']
    module.write_text("import threading\n\ndef test_x(app, client):\n    '''not gunicorn'''\n")
    assert process_uses(module) == []
