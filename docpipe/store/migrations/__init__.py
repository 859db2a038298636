"""Alembic migrations of the run-record store (see :mod:`docpipe.store.migrate`).

``env.py`` and ``versions/`` are an ordinary Alembic script directory. The store
runs them itself when it opens a database; a developer adds a revision after
changing :mod:`docpipe.store.schema` with, from the repository root::

    .venv/bin/alembic -c docpipe/store/migrations/alembic.ini -x url=sqlite:///dev.db upgrade head
    .venv/bin/alembic -c docpipe/store/migrations/alembic.ini -x url=sqlite:///dev.db \
        revision --autogenerate --rev-id 0003 -m "what changed"

(review the generated file: autogenerate misses some changes), then
set :data:`docpipe.store.migrate.HEAD` to the new revision id.
"""
