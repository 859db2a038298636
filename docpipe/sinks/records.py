"""The record of one finished run that sinks are given, read from the store in bulk."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from docpipe.store.schema import flow_runs, flows

#: ids per query: under every database's limit on bound parameters
_CHUNK = 500

_COLUMNS = (flow_runs.c.id.label("run_id"), flow_runs.c.batch_id, flows.c.name.label("flow"),
            flow_runs.c.document, flow_runs.c.correlation_id, flow_runs.c.status, flow_runs.c.error_kind,
            flow_runs.c.error, flow_runs.c.failed_step, flow_runs.c.outputs, flow_runs.c.started_at,
            flow_runs.c.finished_at)


def run_records(store: Any, run_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The sink records of ``run_ids`` by run id (a run the store does not hold is absent):
    ``run_id, batch_id, flow, document, correlation_id, status, error_kind, error,
    failed_step, outputs`` (decoded, blob references resolved), ``started_at, finished_at``.

    One query per 500 ids, whatever their number: the dispatcher reads a claimed batch of
    deliveries at once, never one run at a time.
    """
    ids = sorted(set(run_ids))
    base = sa.select(*_COLUMNS).select_from(flow_runs.join(flows, flow_runs.c.flow_id == flows.c.id))
    found: dict[str, dict[str, Any]] = {}
    for i in range(0, len(ids), _CHUNK):
        for row in store._query(base.where(flow_runs.c.id.in_(ids[i:i + _CHUNK]))):
            record = dict(row)
            record["outputs"] = store._decode(record["outputs"], True) or {}
            found[record["run_id"]] = record
    return found
