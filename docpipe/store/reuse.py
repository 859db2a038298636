"""The reuse lookup: which earlier succeeded tasks have a given cache key (docs/provenance.md).

The engine asks once per wave of ready tasks, for all their keys at once, only where the
cache policy is on: one indexed query per :data:`CHUNK` keys
(``ix_task_runs_cache_key``), answering the latest succeeded task of each key (the
highest id: records are inserted in the order they happened), never more than one row
per key however often a document was run.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from docpipe.blobs import resolve
from docpipe.status import Status
from docpipe.store.schema import task_runs

if TYPE_CHECKING:
    from docpipe.store import Store

__all__ = ["CHUNK", "Reusable", "reusable"]

#: keys per query (well under SQLite's and PostgreSQL's bound-parameter limits)
CHUNK = 500


@dataclass(frozen=True)
class Reusable:
    """The latest succeeded task with a cache key: where it was recorded and what it wrote
    (decoded, blob references resolved)."""

    task_id: int
    flow_run_id: str
    step: str
    outputs: dict[str, Any]


def reusable(store: Store, keys: Collection[str]) -> dict[str, Reusable]:
    """For each of ``keys`` that an earlier succeeded task has, that task (the latest one).

    Tasks still in the writer's buffers are not seen: the lookup never waits for the
    writer. A task whose outputs were not recorded (``None``), or whose blobs are gone, is
    not reusable.
    """
    wanted = sorted(set(keys))
    found: dict[str, Reusable] = {}
    for i in range(0, len(wanted), CHUNK):
        chunk = wanted[i:i + CHUNK]
        latest = (
            sa.select(sa.func.max(task_runs.c.id).label("id"))
            .where(task_runs.c.cache_key.in_(chunk), task_runs.c.status == str(Status.SUCCEEDED),
                   task_runs.c.outputs.is_not(None))
            .group_by(task_runs.c.cache_key)
            .subquery()
        )
        query = sa.select(task_runs.c.id, task_runs.c.cache_key, task_runs.c.flow_run_id, task_runs.c.step,
                          task_runs.c.outputs).where(task_runs.c.id.in_(sa.select(latest.c.id)))
        with store._connect() as conn:  # noqa: SLF001 - the store package's own helper
            rows = conn.execute(query).all()
        for task_id, key, run_id, step, text in rows:
            outputs = json.loads(text)
            if not isinstance(outputs, dict):
                continue
            if '"$blob"' in text:
                try:
                    outputs = resolve(outputs, store.blobs)
                except FileNotFoundError:  # a blob removed since: the task runs again
                    continue
            found[key] = Reusable(int(task_id), run_id, step, outputs)
    return found
