"""The house has one direction: ``reconcile`` → ``receiver`` → ``config``.

The composition roots wire the packages together and are exempt: ``wsgi.py`` (outside the
packages) and gunicorn's process hooks in ``config/gunicorn.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSITION_ROOTS = {"config/gunicorn.py"}
#: What each package may import of the project's own packages.
ALLOWED = {
    "config": {"config"},
    "receiver": {"receiver", "config"},
    "reconcile": {"reconcile", "receiver", "config"},
}


def imported_packages(path: Path) -> set[str]:
    """Return the project packages a module imports, wherever in the module it does."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(name.split(".")[0] for name in names)
    return found & set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_run_one_way(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - ALLOWED[package])
        for path in sorted((ROOT / package).rglob("*.py"))
        if imported_packages(path) - ALLOWED[package]
        and str(path.relative_to(ROOT)) not in COMPOSITION_ROOTS
    }
    assert wrong == {}


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from reconcile.poller import Reconciler\n")
    assert imported_packages(module) == {"reconcile"}
