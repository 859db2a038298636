"""The SQL sink: one row per finished run in a table of any database SQLAlchemy reaches,
upserted by run id.

``NAME=sql:URL#TABLE`` (``#SCHEMA.TABLE`` for a table outside the default schema; no
fragment: ``docpipe_results``). The table is created if missing, with the columns of
:data:`TABLE_COLUMNS` (``outputs`` as JSON text). A run delivered twice (a retry after a
crash) updates its row: ``INSERT ... ON CONFLICT (run_id) DO UPDATE`` on PostgreSQL and
SQLite, a delete and insert in one transaction elsewhere.
"""

from __future__ import annotations

import json
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from docpipe.sinks.base import Sink, SinkError

DEFAULT_TABLE = "docpipe_results"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

#: the table's columns besides ``run_id`` (the primary key), as records name them
TABLE_COLUMNS = ("batch_id", "flow", "document", "correlation_id", "status", "error_kind", "error", "outputs",
                 "finished_at")


def _table(name: str, schema: str | None) -> sa.Table:
    return sa.Table(
        name, sa.MetaData(schema=schema),
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("batch_id", sa.String(64)),
        sa.Column("flow", sa.String(1024)),
        sa.Column("document", sa.Text),
        sa.Column("correlation_id", sa.String(255)),
        sa.Column("status", sa.String(32)),
        sa.Column("error_kind", sa.String(64)),
        sa.Column("error", sa.Text),
        sa.Column("outputs", sa.Text),
        sa.Column("finished_at", sa.Double),
    )


class SqlSink(Sink):
    """``NAME=sql:URL#TABLE``: rows upserted by run id (see the module docstring)."""

    kind = "sql"

    def __init__(self, name: str, spec: str, options: dict[str, Any]) -> None:
        """Parse the URL and table name and make the engine; connect to nothing yet."""
        super().__init__(name, spec, options)
        url, _, fragment = spec.partition("#")
        target = self._option("table", fragment or DEFAULT_TABLE, str)
        schema, _, table = target.rpartition(".")
        for part in (table, *([schema] if schema else [])):
            if not _NAME.fullmatch(part):
                raise SinkError(f"sink '{name}': table name {target!r} is not a plain SQL name "
                                "(letters, digits and _; SCHEMA.TABLE for another schema)")
        try:
            self.url = sa.make_url(url)
            connect_args = {"timeout": 30} if self.url.get_backend_name() == "sqlite" else {}
            self.engine = sa.create_engine(self.url, pool_pre_ping=True, connect_args=connect_args)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError, ValueError) as exc:
            raise SinkError(f"sink '{name}': {url!r} is not a database URL SQLAlchemy can use: {exc}") from exc
        self.table = _table(table, schema or None)
        self._ready = False

    def __repr__(self) -> str:
        return f"SqlSink({self.name!r}, {self.url.render_as_string(hide_password=True)!r}, {self.table.fullname!r})"

    def deliver(self, records: list[dict[str, Any]]) -> list[str | None]:
        """Upsert one row per record in one transaction (creating the table the first time)."""
        rows: dict[str, dict[str, Any]] = {}
        for r in records:
            row = {c: r.get(c) for c in TABLE_COLUMNS}
            row["outputs"] = json.dumps(r.get("outputs") or {}, ensure_ascii=False, default=str)
            rows[str(r["run_id"])] = {"run_id": str(r["run_id"]), **row}
        if not self._ready:
            self.table.metadata.create_all(self.engine, checkfirst=True)
            self._ready = True
        with self.engine.begin() as conn:
            self._upsert(conn, list(rows.values()))
        return [None] * len(records)

    def _upsert(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        t = self.table
        name = conn.dialect.name
        if name in ("postgresql", "sqlite"):
            insert = postgresql.insert(t) if name == "postgresql" else sqlite.insert(t)
            conn.execute(insert.on_conflict_do_update(
                index_elements=[t.c.run_id], set_={c: insert.excluded[c] for c in TABLE_COLUMNS}), rows)
            return
        conn.execute(t.delete().where(t.c.run_id.in_([r["run_id"] for r in rows])))
        conn.execute(t.insert(), rows)

    def close(self) -> None:
        """Close the engine's connections."""
        self.engine.dispose()
