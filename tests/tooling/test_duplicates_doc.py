"""docs/duplicates.md, the list of repeated code that stays, agrees with itself and the tree.

The duplication tool is not available here; this checks what can be checked without it:
every file a listed pair names still exists, and the table lists as many pairs as the
counts above it say.
"""

from __future__ import annotations

import re

from devtools.processes import ROOT

_PAIR = re.compile(r"`(\S+?):\d+-\d+ ~ (\S+?):\d+-\d+`")


def _doc() -> str:
    return (ROOT / "docs" / "duplicates.md").read_text(encoding="utf-8")


def _table(doc: str) -> str:
    return doc[doc.index("| pairs | why they stay |") :]


def test_every_listed_pair_names_files_that_exist() -> None:
    pairs = _PAIR.findall(_table(_doc()))
    assert pairs
    missing = {
        name
        for pair in pairs
        for name in pair
        if not (ROOT / "receiver" / name).is_file() and not (ROOT / "reconcile" / name).is_file()
    }
    assert not missing, f"docs/duplicates.md names files that are gone: {sorted(missing)}"


def test_the_table_lists_as_many_pairs_as_the_counts_say() -> None:
    doc = _doc()
    now = re.findall(r"^\| `(receiver|reconcile)/` \| \d+ \| (\d+) \|", doc, re.M)
    assert [folder for folder, _ in now] == ["receiver", "reconcile"]
    assert len(_PAIR.findall(_table(doc))) == sum(int(count) for _, count in now)
