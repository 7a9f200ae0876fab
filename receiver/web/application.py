"""The Flask class of the app: Flask's own, asking once whether its functions are coroutines.

Flask calls ``ensure_sync`` on the view and on every before-request, after-request and
teardown function of every request, and each call asks ``inspect.iscoroutinefunction``
again. The app's own functions do not change once it is built: :meth:`JobhooksFlask.
note_plain_functions` asks about each of them once, and ``ensure_sync`` hands those back
as they are. Anything else (a function registered later, one added for one request with
``after_this_request``) goes through Flask's own ``ensure_sync``, coroutines included.

Its JSON answers keep each object's keys in the order the code wrote them (the submission
id first) instead of sorting them: sorting was a quarter of encoding an owner's page of 100.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from inspect import iscoroutinefunction
from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider

__all__ = ["JobhooksFlask"]


class _JsonInWrittenOrder(DefaultJSONProvider):
    """Flask's JSON, with keys as written: ``JSON_SORT_KEYS`` was removed in Flask 2.3."""

    sort_keys = False


class JobhooksFlask(Flask):
    """Flask, with the answer to "is it a coroutine?" kept for the app's own functions."""

    json_provider_class = _JsonInWrittenOrder

    #: The app's functions found plain (no coroutine) when it was built.
    _plain: frozenset[Callable[..., Any]] = frozenset()

    def note_plain_functions(self) -> None:
        """Ask once about every view and request hook registered so far (call it last)."""
        self._plain = frozenset(f for f in self._functions() if not iscoroutinefunction(f))

    def _functions(self) -> Iterator[Callable[..., Any]]:
        yield from self.view_functions.values()
        for registry in (
            self.before_request_funcs,
            self.after_request_funcs,
            self.teardown_request_funcs,
        ):
            for functions in registry.values():
                yield from functions
        yield from self.teardown_appcontext_funcs
        for by_code in self.error_handler_spec.values():
            for handlers in by_code.values():
                yield from handlers.values()

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        try:
            if func in self._plain:
                return func
        except TypeError:  # an unhashable callable: Flask asks, as it always does
            pass
        return super().ensure_sync(func)
