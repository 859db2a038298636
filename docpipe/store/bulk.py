"""Bulk statements: many rows per SQL statement, compiled by SQLAlchemy for any dialect.

The record writer runs on a background thread in the engine's process. A DBAPI
``executemany`` runs the statement once per row and Python's ``sqlite3``
releases the GIL around every row; while the engine's thread is busy, each
release costs the writer up to a whole GIL switch interval (5 ms), so a plain
``executemany`` of 5,000 rows could take seconds. A :class:`BulkStatement`
instead packs up to ``max_rows`` rows into one statement (a multi-row
``INSERT ... VALUES (...), (...)``, or an ``UPDATE ... FROM`` a ``VALUES``
CTE), which is also faster on an idle interpreter.

Statements are SQLAlchemy Core constructs compiled for the engine's own
dialect, then run with ``Connection.exec_driver_sql``: row tuples are flattened
straight into the DBAPI parameters (a tuple for a positional paramstyle such as
SQLite's ``qmark``, a dict for a named one such as psycopg's ``pyformat``), so
no per-row SQLAlchemy type processing happens. Compiling a several-hundred-row
statement takes SQLAlchemy a tenth of a second, so each size is compiled once
per process, when first needed, and cached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any

import sqlalchemy as sa

#: A row as the writer buffers it: values in the order of the statement's fields.
Row = tuple[Any, ...]
#: Builds the statement for ``k`` rows, with bind names ``f"{field}_{i}"`` (``i < k``).
Builder = Callable[[int], sa.ClauseElement]

# (statement name, rows, dialect identity) -> (SQL text, positional reorder or None)
_COMPILED: dict[tuple[Any, ...], tuple[str, tuple[int, ...] | None]] = {}


def row_binds(fields: Sequence[str], i: int) -> dict[str, sa.BindParameter[Any]]:
    """``{field: bindparam(f"{field}_{i}")}``: the binds of row ``i`` of a bulk statement."""
    return {name: sa.bindparam(f"{name}_{i}") for name in fields}


def insert_builder(table: sa.Table, fields: Sequence[str]) -> Builder:
    """Builds the multi-row INSERT of ``fields`` into ``table`` for ``k`` rows."""

    def build(k: int) -> sa.ClauseElement:
        return table.insert().values([row_binds(fields, i) for i in range(k)])

    return build


class BulkStatement:
    """One bulk INSERT or UPDATE, run over any number of rows in few statements.

    ``rows`` given to :meth:`execute` are tuples in the order of ``fields``.
    They are sent ``max_rows`` (a power of two) to a statement, the remainder
    in statements of decreasing powers of two; ``max_rows=1`` is a plain
    ``executemany``.
    """

    def __init__(
        self,
        name: str,
        build: Builder,
        fields: Sequence[str],
        dialect: sa.Dialect,
        max_rows: int = 256,
    ) -> None:
        """Prepare statement ``name`` (a cache key) made by ``build`` for ``dialect``."""
        if max_rows < 1 or max_rows & (max_rows - 1):
            raise ValueError(f"max_rows must be a power of two, not {max_rows}")
        self.name = name
        self.fields = tuple(fields)
        self.max_rows = max_rows
        self._build = build
        self._dialect = dialect
        self._positional = bool(dialect.positional)
        self._dialect_key = (
            type(dialect),
            dialect.paramstyle,
            getattr(dialect, "server_version_info", None),
        )
        self._names: dict[int, tuple[str, ...]] = {}

    def execute(self, conn: sa.Connection, rows: Sequence[Row]) -> None:
        """Run the statement over ``rows`` on ``conn`` (in the caller's transaction)."""
        k = self.max_rows
        full = len(rows) - len(rows) % k
        if full:
            self._run(conn, k, [rows[i : i + k] for i in range(0, full, k)])
        start, rest = full, len(rows) - full
        while rest:
            size = 1 << (rest.bit_length() - 1)
            self._run(conn, size, [rows[start : start + size]])
            start, rest = start + size, rest - size

    def _run(self, conn: sa.Connection, k: int, chunks: list[Sequence[Row]]) -> None:
        """Execute the ``k``-row statement once per chunk of ``k`` rows."""
        sql, reorder = self._compiled(k)
        params: list[Any]
        if not self._positional:
            names = self._bind_names(k)
            params = [dict(zip(names, chain.from_iterable(chunk), strict=True)) for chunk in chunks]
        elif reorder is None:
            params = [tuple(chain.from_iterable(chunk)) for chunk in chunks]
        else:
            flats = [tuple(chain.from_iterable(chunk)) for chunk in chunks]
            params = [tuple(flat[i] for i in reorder) for flat in flats]
        conn.exec_driver_sql(sql, params if len(params) > 1 else params[0])

    def _bind_names(self, k: int) -> tuple[str, ...]:
        """Bind names of a ``k``-row statement, row by row: what a flattened chunk fills."""
        names = self._names.get(k)
        if names is None:
            names = self._names[k] = tuple(f"{field}_{i}" for i in range(k) for field in self.fields)
        return names

    def _compiled(self, k: int) -> tuple[str, tuple[int, ...] | None]:
        """The ``k``-row SQL, and the reorder if its positional binds are not in row order."""
        key = (self.name, k, *self._dialect_key)
        found = _COMPILED.get(key)
        if found is None:
            compiled = self._build(k).compile(dialect=self._dialect, for_executemany=True)
            reorder: tuple[int, ...] | None = None
            if self._positional:
                names = self._bind_names(k)
                order = tuple(getattr(compiled, "positiontup", None) or ())
                if order != names:
                    index = {name: i for i, name in enumerate(names)}
                    reorder = tuple(index[name] for name in order)
            found = _COMPILED[key] = (str(compiled), reorder)
        return found
