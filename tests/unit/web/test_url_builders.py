"""The tests' apps share their URL rules' compiled builders (``tests/conftest.py``)."""

from __future__ import annotations

from typing import Any

from flask import Flask

from receiver import create_app
from receiver.store.engines import get_engine
from tests.conftest import WERKZEUG_COMPILE_BUILDER


def test_every_url_builds_as_werkzeugs_own_builders_build_it(
    app: Flask, app_config: dict[str, Any]
) -> None:
    """The tests' apps share their rules' compiled URL builders (tests/conftest.py): each
    one is the code werkzeug compiles for that rule, and builds the same URLs."""
    rules = list(app.url_map.iter_rules())
    assert len(rules) > 30
    another = create_app(app_config)
    try:
        others = {(rule.rule, rule.endpoint): rule for rule in another.url_map.iter_rules()}
    finally:
        get_engine(another).dispose()
    samples = {"IntegerConverter": 7, "PathConverter": "a/b c"}
    for rule in rules:
        # Shared: the other app's rule runs the same function, bound to that rule.
        twin = others[(rule.rule, rule.endpoint)]
        assert twin._build.__func__ is rule._build.__func__  # type: ignore[attr-defined]
        values = {
            name: samples.get(type(converter).__name__, "v w/x")
            for name, converter in rule._converters.items()
        }
        for append_unknown, shared in ((False, rule._build), (True, rule._build_unknown)):
            own = WERKZEUG_COMPILE_BUILDER(rule, append_unknown).__get__(rule, None)
            assert shared.__func__.__code__.co_code == own.__func__.__code__.co_code, rule  # type: ignore[attr-defined]
            assert shared(**values) == own(**values), rule
            if append_unknown:
                extra = {**values, "q": "1 2"}
                assert shared(**extra) == own(**extra), rule
