"""The demo keeps to a database of its own: one holding other submissions is refused."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from devtools.demo import BATCH, others
from tests.helpers import add_submission


def test_the_demo_counts_the_submissions_it_did_not_make(engine: Engine) -> None:
    assert others(engine) == 0
    add_submission(engine, BATCH[0][0])
    assert others(engine) == 0  # its own, from an earlier run
    add_submission(engine, "sub_real_1")
    assert others(engine) == 1
