"""Prometheus metrics, computed from the run records.

The engine's hot path stays free of metric updates: every number here is an
aggregate query over the store, so ``docpipe metrics`` prints the same figures
in any process, for every engine that writes to the database (several drivers on
one PostgreSQL included). Its cost grows with the history: the server's
``/metrics`` is :mod:`docpipe.telemetry` instead (counters of what that server
wrote, gauges from bounded queries).

Exposed (text format of Prometheus, via ``prometheus_client``):

* ``docpipe_flow_runs_total{flow, status}`` — flow runs (one per document) by status
* ``docpipe_task_runs_total{block, status}`` — task attempts by block and status
  (``retrying`` attempts are the retries)
* ``docpipe_task_retries_total{block}`` — attempts that were retried
* ``docpipe_task_failures_total{block, error_kind}`` — final task failures by kind
* ``docpipe_task_duration_seconds{block}`` — histogram of task durations
* ``docpipe_flow_runs_in_flight`` — flow runs recorded as running (the queue depth
  of all engines writing here; after a crash, the runs a resume will continue)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from docpipe.status import Status
from docpipe.store.schema import flow_runs, flows, task_runs

BUCKETS = (0.0001, 0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0)


class StoreCollector(Collector):
    """Collects the metrics above from a :class:`docpipe.store.Store` at scrape time."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def _rows(self, query: Any) -> list[Any]:
        self.store.writer.wait()
        with self.store.engine.connect() as conn:
            return list(conn.execute(query))

    def collect(self) -> Iterator[Any]:
        runs = CounterMetricFamily("docpipe_flow_runs", "Flow runs by flow and status",
                                   labels=["flow", "status"])
        for name, status, n in self._rows(
                sa.select(flows.c.name, flow_runs.c.status, sa.func.count())
                .select_from(flow_runs.join(flows, flows.c.id == flow_runs.c.flow_id))
                .group_by(flows.c.name, flow_runs.c.status)):
            runs.add_metric([name, status], n)
        yield runs

        in_flight = GaugeMetricFamily("docpipe_flow_runs_in_flight", "Flow runs recorded as running")
        (running,) = self._rows(sa.select(sa.func.count()).where(flow_runs.c.status == Status.RUNNING))
        in_flight.add_metric([], running[0])
        yield in_flight

        tasks = CounterMetricFamily("docpipe_task_runs", "Task attempts by block and status",
                                    labels=["block", "status"])
        retries = CounterMetricFamily("docpipe_task_retries", "Task attempts that were retried",
                                      labels=["block"])
        for block, status, n in self._rows(
                sa.select(task_runs.c.block, task_runs.c.status, sa.func.count())
                .group_by(task_runs.c.block, task_runs.c.status)):
            tasks.add_metric([block or "", status], n)
            if status == Status.RETRYING:
                retries.add_metric([block or ""], n)
        yield tasks
        yield retries

        failures = CounterMetricFamily("docpipe_task_failures", "Final task failures by kind",
                                       labels=["block", "error_kind"])
        for block, kind, n in self._rows(
                sa.select(task_runs.c.block, task_runs.c.error_kind, sa.func.count())
                .where(task_runs.c.status == Status.FAILED)
                .group_by(task_runs.c.block, task_runs.c.error_kind)):
            failures.add_metric([block or "", kind or ""], n)
        yield failures

        duration = task_runs.c.finished_at - task_runs.c.started_at
        buckets = [sa.func.sum(sa.case((duration <= b, 1), else_=0)) for b in BUCKETS]
        hist = HistogramMetricFamily("docpipe_task_duration_seconds", "Task duration by block",
                                     labels=["block"])
        for row in self._rows(
                sa.select(task_runs.c.block, sa.func.count(), sa.func.sum(duration), *buckets)
                .where(task_runs.c.finished_at.is_not(None), task_runs.c.status != Status.SKIPPED)
                .group_by(task_runs.c.block)):
            block, count, total, *cumulative = row
            pairs = [(str(b), int(c or 0)) for b, c in zip(BUCKETS, cumulative, strict=True)]
            hist.add_metric([block or ""], pairs + [("+Inf", int(count))], float(total or 0.0))
        yield hist


def exposition(store: Any) -> bytes:
    """The metrics in Prometheus' text format."""
    registry = CollectorRegistry()
    registry.register(StoreCollector(store))
    return generate_latest(registry)
