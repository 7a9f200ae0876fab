"""Hot statements: SQLAlchemy Core, compiled once, run on the driver's cursor.

Every webhook runs three statements (find the submission, insert the inbox row, update the
submission). Through ``Connection.execute`` each one cost more in SQLAlchemy's execution
bookkeeping (cache lookup, execution context, parameter and result set-up, events) than in
the database itself, and on SQLite the writer holds the lock all that time. Counted with
callgrind on the whole webhook request in process on SQLite (``bench/README.md``): 2.48
million instructions per delivery through ``Connection.execute``, 1.99 million here.

A :class:`HotStatement` keeps what SQLAlchemy would do and skips the rest: the statement is
compiled by SQLAlchemy once per dialect, parameters and results go through the column
types' own processors (public ``TypeEngine`` API), driver errors come back as SQLAlchemy's
exceptions (so a locked or lost database still answers 503), and it runs on a DBAPI cursor
the connection keeps for its hot statements, inside the transaction the caller began; rows
are fetched only from a statement that gives them, as compiled. Statement listeners
(``before_cursor_execute`` / ``after_cursor_execute``: the fault tests, the reconcile
benchmark's statement counter) still hear every statement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

__all__ = ["HotStatement"]

_Processor = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    #: Whether the driver takes a tuple in the SQL's placeholder order (``?``) rather than a
    #: mapping (``%(name)s``).
    positional: bool
    #: One entry per placeholder, in the SQL's order when positional: its name, the caller's
    #: key and its processor (or None), or, for a value the statement holds itself (an
    #: anonymous bind such as SQLite's OFFSET 0), None, None and the value, processed once.
    #: The driver's parameters are built from it in one pass.
    binds: tuple[tuple[str, str | None, _Processor | None, Any], ...]
    #: (index, processor) of the result columns that have a processor; None when none has:
    #: the other columns are taken as the driver gives them.
    results: tuple[tuple[int, _Processor], ...] | None
    #: Whether the statement gives rows (a SELECT, a RETURNING): known here, so the cursor's
    #: ``description`` is never asked for (psycopg builds an object per column for it:
    #: 100,000 instructions for the submission's ten).
    returns_rows: bool


#: Where a driver connection keeps the cursor its hot statements share, in the pool's
#: ``info`` of that connection (emptied when the pool connects anew).
_CURSOR = "jobhooks.hot_cursor"


def _cursor(info: dict[Any, Any], dbapi_connection: Any) -> Any:
    """Return the driver connection's cursor for hot statements, made on first use.

    One cursor serves every hot statement of a connection, one after the other (a pooled
    connection serves one thread at a time): making and closing one per statement cost
    psycopg about 23,000 instructions.
    """
    kept = info.get(_CURSOR)
    if kept is not None and kept[0] is dbapi_connection:
        return kept[1]
    cursor = dbapi_connection.cursor()
    info[_CURSOR] = (dbapi_connection, cursor)
    return cursor


class HotStatement:
    """A Core statement, run on the DBAPI cursor with the parameter names it was built for."""

    __slots__ = ("_compiled", "_keys", "_raw", "_statement")

    def __init__(
        self, statement: ClauseElement, keys: Sequence[str] | None = None, *, raw: bool = False
    ) -> None:
        self._statement = statement
        #: For an INSERT without ``.values()``: the columns every execution sets.
        self._keys = list(keys) if keys is not None else None
        #: Rows as the driver gives them: the caller converts their values itself.
        self._raw = raw
        self._compiled: dict[str, _Compiled] = {}

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled = self._statement.compile(dialect=dialect, column_keys=self._keys)
        assert isinstance(compiled, SQLCompiler)
        binds: dict[str, tuple[str, str | None, _Processor | None, Any]] = {}
        for bind, name in compiled.bind_names.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.unique:  # anonymous: no caller can name it, so it keeps its value
                value = bind.effective_value
                binds[name] = (name, None, None, value if processor is None else processor(value))
            else:
                binds[name] = (name, bind.key, processor, None)
        order = compiled.positiontup
        columns = tuple(getattr(self._statement, "exported_columns", ()))
        processors = (
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        )
        results = tuple((index, p) for index, p in enumerate(processors) if p is not None)
        entry = _Compiled(
            sql=compiled.string,
            positional=order is not None,
            binds=tuple(binds.values()) if order is None else tuple(binds[n] for n in order),
            results=None if self._raw or not results else results,
            returns_rows=bool(columns),
        )
        self._compiled[dialect.name] = entry
        return entry

    def ran(self, sql: str | None) -> bool:
        """Tell whether ``sql`` (a failed statement's text) is this statement, as compiled."""
        return any(compiled.sql == sql for compiled in self._compiled.values())

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        """Run the statement in ``conn``'s transaction; return every row it gave."""
        assert conn.in_transaction(), "a hot statement runs inside the caller's transaction"
        dialect = conn.dialect
        compiled = self._compiled.get(dialect.name) or self._compile(dialect)
        driver_params = _driver_params(compiled, params)
        fairy = conn.connection
        dbapi_connection = fairy.dbapi_connection
        assert dbapi_connection is not None
        dispatch = conn.dispatch
        statement = compiled.sql
        cursor = _cursor(fairy.info, dbapi_connection)
        try:
            if dispatch.before_cursor_execute:
                for listener in dispatch.before_cursor_execute:
                    listener(conn, cursor, statement, driver_params, None, False)
            cursor.execute(statement, driver_params)
            if dispatch.after_cursor_execute:
                for listener in dispatch.after_cursor_execute:
                    listener(conn, cursor, statement, driver_params, None, False)
            rows = cursor.fetchall() if compiled.returns_rows else []
        except dialect.loaded_dbapi.Error as exc:
            # As Connection.execute would: a lost connection is invalidated, so the pool
            # replaces it, and the error is SQLAlchemy's (OperationalError and friends).
            lost = dialect.is_disconnect(exc, dbapi_connection, cursor)
            if lost:
                conn.invalidate(exc)
            fairy.info.pop(_CURSOR, None)  # the next statement starts on a new cursor
            with suppress(dialect.loaded_dbapi.Error):  # gone with an invalidated connection
                cursor.close()
            raise DBAPIError.instance(
                statement,
                driver_params,
                exc,
                dialect.loaded_dbapi.Error,
                connection_invalidated=lost,
                dialect=dialect,
            ) from exc
        if compiled.results is not None:
            rows = [_converted(row, compiled.results) for row in rows]
        return rows


def _driver_params(compiled: _Compiled, params: Mapping[str, Any]) -> Any:
    """Return the driver's parameters for ``params``: processed, in order or by name."""
    if compiled.positional:
        return tuple(
            [
                constant
                if key is None
                else params[key]
                if process is None
                else process(params[key])
                for _, key, process, constant in compiled.binds
            ]
        )
    values = {}
    for name, key, process, constant in compiled.binds:
        if key is None:
            values[name] = constant
        else:
            value = params[key]
            values[name] = value if process is None else process(value)
    return values


def _converted(row: Sequence[Any], results: tuple[tuple[int, _Processor], ...]) -> tuple[Any, ...]:
    """Return ``row`` with each column that has a processor read through it."""
    values = list(row)
    for index, processor in results:
        values[index] = processor(values[index])
    return tuple(values)
