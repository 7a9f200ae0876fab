"""Every function of the command line stays under 60 lines (its decorators not counted)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 60


def long_functions(path: Path) -> list[str]:
    """Return ``name: N lines`` for each function in ``path`` longer than :data:`LIMIT`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1  # from `def`: decorators excluded
            if length > LIMIT:
                found.append(f"{path.relative_to(ROOT)}:{node.name}: {length} lines")
    return found


def test_no_command_function_is_over_60_lines() -> None:
    paths = sorted((ROOT / "receiver" / "cli").glob("*.py"))
    assert len(paths) > 5
    assert [found for path in paths for found in long_functions(path)] == []
