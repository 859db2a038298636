"""Engines for the store's URLs: SQLite set up for many writers, PostgreSQL as it comes.

SQLite connections get the PRAGMAs below (WAL, ``synchronous=NORMAL``, a 30 s
busy timeout, foreign keys on) and explicit transactions; an in-memory database
is one connection shared by all threads. PostgreSQL (psycopg 3) uses a
pre-pinged connection pool and needs nothing else.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

__all__ = ["create_engine", "default_blob_dir"]

_BUSY_TIMEOUT_S = 30
_WAL = "PRAGMA journal_mode = WAL"
_SQLITE_PRAGMAS = (
    f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_S * 1000}",
    _WAL,
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA cache_size = -65536",  # up to 64 MiB of pages: index inserts stay in memory
)


def store_dir(url: str) -> Path:
    """The folder a store's files live in: the one holding a SQLite database file, else
    ``.docpipe`` in the current folder (PostgreSQL, in-memory SQLite)."""
    parsed = sa.make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:") and not database.startswith("file:"):
        return Path(database).resolve().parent
    return Path(".docpipe").resolve()


def default_blob_dir(url: str) -> Path:
    """``$DOCPIPE_BLOBS``, else ``blobs`` next to a SQLite database file, else ``.docpipe/blobs``."""
    given = os.environ.get("DOCPIPE_BLOBS")
    if given:
        return Path(given).resolve()
    return store_dir(url) / "blobs"


def create_engine(url: str) -> tuple[sa.Engine, bool]:
    """An engine for ``url``, and whether all threads share one in-memory connection."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True), False
    database = parsed.database or ""
    memory = database in ("", ":memory:") or parsed.query.get("mode") == "memory"
    if memory:
        engine = sa.create_engine(parsed, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        if not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed)
    sa.event.listen(engine, "connect", _on_sqlite_connect)
    sa.event.listen(engine, "begin", _on_sqlite_begin)
    return engine, memory


def _on_sqlite_connect(dbapi_connection: Any, _record: object) -> None:
    """Apply the SQLite PRAGMAs, and leave transactions to SQLAlchemy.

    Python's ``sqlite3`` only opens a transaction implicitly before statements
    that start with INSERT/UPDATE/DELETE/REPLACE (not before ``WITH ... UPDATE``);
    turning that off and emitting BEGIN on SQLAlchemy's ``begin`` makes every
    ``engine.begin()`` block one real transaction (the pattern SQLAlchemy
    documents for pysqlite).
    """
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            if pragma == _WAL:
                _switch_to_wal(cursor)
            else:
                cursor.execute(pragma)
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode = WAL``, retried while another connection holds the lock: on a
    new database file several processes switch it at once, and SQLite answers the losers
    "database is locked" at once instead of waiting out ``busy_timeout`` (the mode change
    does not go through the busy handler). Cheap once the file is in WAL mode."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute(_WAL)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _on_sqlite_begin(conn: sa.Connection) -> None:
    """Open the transaction SQLAlchemy is beginning (see :func:`_on_sqlite_connect`).

    A connection with the execution option ``docpipe_sqlite_begin`` (the
    migrations use ``"BEGIN IMMEDIATE"``, to take the write lock first) opens
    it that way.
    """
    conn.exec_driver_sql(conn.get_execution_options().get("docpipe_sqlite_begin", "BEGIN"))
