"""Every function of the service stays under 60 lines (its decorators not counted)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 60
#: Declarations, not logic: the metrics registry names every metric in one place, and a
#: migration states a schema.
DECLARATIONS = {"receiver/observe/metrics.py:__init__"}
MIGRATIONS = ROOT / "receiver" / "store" / "migrations"


def long_functions(path: Path, root: Path = ROOT) -> list[str]:
    """Return ``name: N lines`` for each function in ``path`` longer than :data:`LIMIT`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1  # from `def`: decorators excluded
            where = f"{path.relative_to(root)}:{node.name}"
            if length > LIMIT and where not in DECLARATIONS:
                found.append(f"{where}: {length} lines")
    return found


def test_no_function_is_over_60_lines() -> None:
    paths = sorted(
        path
        for package in ("receiver", "reconcile")
        for path in (ROOT / package).rglob("*.py")
        if MIGRATIONS not in path.parents
    )
    assert len(paths) > 50
    assert [found for path in paths for found in long_functions(path)] == []


def test_the_check_counts_from_def_to_the_last_line(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    body = "".join(f"    x{n} = {n}\n" for n in range(LIMIT - 1))
    module.write_text(f"def short():\n{body}\ndef long():\n{body}    x = 1\n    return x\n")
    assert long_functions(module, tmp_path) == [f"m.py:long: {LIMIT + 2} lines"]
