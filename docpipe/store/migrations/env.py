"""Alembic environment of the docpipe store.

The store runs migrations on its own connection, already inside a transaction
it holds (with the migration lock), passed as ``config.attributes["connection"]``;
Alembic then adds no transaction of its own. Run by hand (the ``alembic``
command), the URL comes from ``-x url=...``, else ``$DOCPIPE_DB``.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

from docpipe.store.schema import metadata

config = context.config


def _configure(**kw: object) -> None:
    context.configure(target_metadata=metadata, compare_type=True, **kw)  # type: ignore[arg-type]


def run_migrations_offline() -> None:
    """Write the SQL to stdout (``alembic upgrade head --sql``)."""
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate on the store's connection, or on one to ``-x url=`` / ``$DOCPIPE_DB``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = sa.create_engine(_url())
    try:
        with engine.connect() as conn:
            _migrate(conn)
    finally:
        engine.dispose()


def _migrate(connection: sa.Connection) -> None:
    # SQLite alters most things only by copying the table: autogenerate batch operations there.
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("DOCPIPE_DB")
    if not url:
        raise SystemExit("docpipe migrations: give the database with -x url=... or DOCPIPE_DB")
    return url


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
