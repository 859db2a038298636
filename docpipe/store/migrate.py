"""Schema migrations at open: every :class:`~docpipe.store.Store` brings its database to the head.

The revisions are Alembic's, in ``docpipe/store/migrations/versions``. Opening
a store costs one query when the database is already at :data:`HEAD` (Alembic
itself is imported only when there is work to do). Otherwise, in ONE
transaction that holds the migration lock (``BEGIN IMMEDIATE`` on SQLite, a
transaction-scoped advisory lock on PostgreSQL), the store reads the revision
again and:

* an empty database is created by running every revision;
* a database made before migrations existed (docpipe's tables, no
  ``alembic_version``) is stamped :data:`BASELINE` — its schema is exactly that
  revision — and upgraded, so its runs survive;
* an older revision is upgraded;
* a revision this docpipe does not know (a newer docpipe wrote it) is refused
  with :class:`StoreSchemaError`.

Both databases run DDL in transactions, so a failed upgrade leaves the database
as it was, and a second process opening the same new database waits for the
first and then finds it at the head.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from docpipe.errors import DocpipeError

__all__ = ["BASELINE", "HEAD", "LOCATION", "StoreSchemaError", "current_revision", "upgrade"]

#: The newest revision; ``tests/store/test_store_migrations.py`` checks it is Alembic's head.
HEAD = "0006"
#: The revision of a database created before migrations (``metadata.create_all``).
BASELINE = "0001"
#: The Alembic script directory.
LOCATION = str(Path(__file__).with_name("migrations"))

# pg_advisory_xact_lock key: b"docpipe\0" as a big-endian signed 64-bit integer.
_PG_LOCK_KEY = int.from_bytes(b"docpipe\0", "big", signed=True)


class StoreSchemaError(DocpipeError):
    """The database's schema cannot be brought to this docpipe's (e.g. a newer docpipe wrote it)."""


def current_revision(conn: sa.Connection) -> str | None:
    """The database's schema revision, or ``None`` when it has no ``alembic_version`` table."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    revisions = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
    if len(revisions) > 1:
        raise StoreSchemaError(f"the database is at several schema revisions at once: {sorted(revisions)}")
    return revisions[0] if revisions else None


def upgrade(engine: sa.Engine) -> None:
    """Bring the database of ``engine`` to :data:`HEAD` (see the module docstring)."""
    with engine.connect() as conn:
        if current_revision(conn) == HEAD:
            return
    with engine.connect() as conn:
        conn.execution_options(docpipe_sqlite_begin="BEGIN IMMEDIATE")
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")
            current = current_revision(conn)
            if current == HEAD:  # another process migrated while we waited for the lock
                return
            _migrate(conn, current)


def _migrate(conn: sa.Connection, current: str | None) -> None:
    """Stamp a pre-migration database, refuse an unknown revision, upgrade to the head."""
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    config = Config()
    config.set_main_option("script_location", LOCATION.replace("%", "%%"))
    config.attributes["connection"] = conn
    script = ScriptDirectory.from_config(config)
    if current is None and sa.inspect(conn).has_table("flows"):
        command.stamp(config, BASELINE)
    elif current is not None:
        try:
            script.get_revision(current)
        except CommandError:
            raise StoreSchemaError(
                f"the store's schema is at revision {current!r}, which this docpipe does not know "
                f"(its newest is {HEAD!r}): a newer docpipe wrote it; upgrade docpipe to open it"
            ) from None
    command.upgrade(config, "head")
