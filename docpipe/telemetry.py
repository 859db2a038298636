"""The server's metrics: counters kept as records are written, gauges from bounded queries.

``docpipe serve`` answers ``GET /metrics`` (:mod:`docpipe.server.health`) with one
:class:`Telemetry`, whose scrape stays fast however many records the store holds:

* **Counters** are kept in memory, from the records the store's writer has committed
  (:meth:`RecordWriter.observe <docpipe.store.writer.RecordWriter.observe>`: on the writer
  thread, once per write round, never on the engine's loop). They count what *this
  server* wrote since it started; Prometheus' ``rate()`` and ``increase()`` are made for
  counters that start at zero with the process.

  - ``docpipe_flow_runs_total{flow, status}`` — flow runs that ended, by their end status (a
    run that waited for a review and was continued counts at each end: ``waiting``, then
    its last status)
  - ``docpipe_task_runs_total{block, status}`` — task attempts (``retrying`` ones are retries)
  - ``docpipe_task_retries_total{block}`` — attempts that were retried
  - ``docpipe_task_failures_total{block, error_kind}`` — final task failures by kind
  - ``docpipe_task_duration_seconds{block}`` — histogram of attempt durations (skips left out)
  - ``docpipe_review_tasks_created_total`` — review tasks (a run waiting for a person)
  - ``docpipe_lease_expiries_total`` — jobs taken over from a server whose lease expired
    (the job runner reports them: :meth:`Telemetry.lease_expired`)

* **Gauges** read shared state at scrape time, each from a query bounded by what is
  unfinished (an index on a status column), never by the history:

  - ``docpipe_jobs{source, status}`` — jobs queued and running (``store.jobs.depth()``)
  - ``docpipe_sink_backlog{sink}`` — deliveries pending per sink (``store.outbox.backlog()``)
  - ``docpipe_flow_runs_in_flight`` — flow runs recorded ``running`` by every engine on this
    store (the ``flow_runs.status`` index)
  - ``docpipe_store_up`` — 1 when those queries answered, 0 when the store did not, or
    another scrape still waits on it (the scrape still answers, with the counters)
  - ``docpipe_pool_workers{block}``, ``docpipe_pool_busy{block}`` — from the callback given
    to :meth:`Telemetry.pools` (the resident engine's ``pool_stats()``)
  - ``docpipe_source_<field>{source}`` — each number in a source's ``status()`` dict, from
    the callback given to :meth:`Telemetry.sources`

  plus the process collector's ``process_*`` (CPU, memory, open files).

``docpipe metrics`` (:mod:`docpipe.metrics`) is the other view: the same counter names
computed by aggregate queries over the whole store, for every engine that ever wrote to
it: right for a report from the command line, too slow to scrape a store of millions of
task runs every 15 seconds (``benchmarks/metrics_scrape.py``).

Wiring, one call each (the server does this): ``telemetry = Telemetry()``,
``telemetry.attach(store)`` for the store the engine records into,
``telemetry.pools(engine.pool_stats)``, ``telemetry.sources(lambda: [s.status() for s in
sources])``, ``telemetry.readiness(check)``, and the job runner calls
``telemetry.lease_expired(n)``.
"""

from __future__ import annotations

import bisect
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from docpipe.status import Status
from docpipe.store.records import RunResumed
from docpipe.store.schema import flow_runs, flows
from docpipe.store.writer import Written

__all__ = ["BUCKETS", "CONTENT_TYPE", "IN_FLIGHT", "PoolStats", "Telemetry"]

#: Upper bounds of the task-duration histogram, in seconds (those of :mod:`docpipe.metrics`).
BUCKETS = (0.0001, 0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0)
#: The media type of :meth:`Telemetry.render` (Prometheus' text format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: ``docpipe_flow_runs_in_flight``: served by the ``flow_runs.status`` index (a scan of the
#: running rows only; tests/test_telemetry.py checks the plan on SQLite and PostgreSQL).
IN_FLIGHT = sa.select(sa.func.count()).select_from(flow_runs).where(flow_runs.c.status == str(Status.RUNNING))
#: What the callback of :meth:`Telemetry.pools` returns: ``{"block", "workers", "busy"}`` per pool.
PoolStats = Callable[[], Iterable[Mapping[str, Any]]]

# Records are read by position (docpipe.store.records; the writer reads them the same way):
# started runs: id 0, flow_id 2; ended runs: id 0, status 1;
# task rows: block 2, status 4, started_at 5, finished_at 6, error_kind 8 (literal indexes below,
# so mypy knows each field's type; tests/test_telemetry.py checks them against TaskRecord)
_block_status = itemgetter(2, 4)
_FAILED, _RETRYING, _SKIPPED = str(Status.FAILED), str(Status.RETRYING), str(Status.SKIPPED)
_NOT_A_NAME = re.compile(r"[^a-zA-Z0-9_]")

log = logging.getLogger(__name__)


class _Histogram:
    """Bucket counts (not cumulative), count and sum of one block's durations."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one: over the largest bound
        self.count = 0
        self.total = 0.0


class Telemetry:
    """The metrics of one server (one process): see the module docstring.

    Holds its own :class:`~prometheus_client.CollectorRegistry`, so several servers in
    one process (the tests) keep apart. Thread-safe: records are counted on the store's
    writer thread, :meth:`render` runs on the server's.
    """

    def __init__(self, *, process: bool = True) -> None:
        """``process``: include the ``process_*`` metrics of this process."""
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._flow_runs: Counter[tuple[str, str]] = Counter()
        self._tasks: Counter[tuple[str, str]] = Counter()
        self._failures: Counter[tuple[str, str]] = Counter()
        self._durations: dict[str, _Histogram] = {}
        self._reviews = 0
        self._lease_expiries = 0
        #: flow id of each run started through an attached writer and not ended yet
        self._run_flow: dict[str, int] = {}
        self._flow_names: dict[int, str] = {}
        self._observers: dict[int, tuple[Any, Callable[[Written], None]]] = {}
        self._store: Any = None
        self._pools: PoolStats | None = None
        self._sources: Callable[[], Iterable[Mapping[str, Any]]] | None = None
        self._ready: Callable[[], str | None] | None = None
        self._probe_lock = threading.Lock()
        self._probe: threading.Thread | None = None
        self._gauge_lock = threading.Lock()
        self.registry.register(_Collector(self))
        if process:
            ProcessCollector(registry=self.registry)

    # --- wiring ----------------------------------------------------------------------

    def attach(self, store: Any) -> None:
        """Count what ``store``'s writer commits from now on; the first store attached
        also answers the gauges' queries (jobs, sink backlog, runs in flight)."""
        if id(store) in self._observers:
            return

        def observe(written: Written) -> None:
            self._count(written, store)

        self._observers[id(store)] = (store, observe)
        store.writer.observe(observe)
        if self._store is None:
            self._store = store

    def detach(self, store: Any) -> None:
        """Stop counting ``store``'s records (and querying it, if it answered the gauges)."""
        found = self._observers.pop(id(store), None)
        if found is not None:
            store.writer.unobserve(found[1])
        if self._store is store:
            self._store = next((s for s, _ in self._observers.values()), None)

    @property
    def store(self) -> Any:
        """The store the gauges and :meth:`ping` query (``None`` before :meth:`attach`)."""
        return self._store

    def pools(self, stats: PoolStats | None) -> None:
        """Read ``docpipe_pool_workers`` / ``docpipe_pool_busy`` from ``stats()`` at each scrape:
        ``[{"block": name, "workers": n, "busy": m}, ...]`` (``Engine.pool_stats``); the pools
        of one block (with different params) are summed."""
        self._pools = stats

    def sources(self, statuses: Callable[[], Iterable[Mapping[str, Any]]] | None) -> None:
        """Read ``docpipe_source_<field>{source}`` from ``statuses()`` at each scrape: one dict
        per source, its name under ``"name"`` (or ``"source"``); every number (or bool) in it
        is a gauge, other values are left out."""
        self._sources = statuses

    def readiness(self, check: Callable[[], str | None] | None) -> None:
        """Have ``GET /readyz`` also ask ``check()``: ``None`` when the engine is ready (the
        pools it was asked to start are up), else the reason it is not."""
        self._ready = check

    def lease_expired(self, n: int = 1) -> None:
        """Count ``n`` jobs taken over because another server's lease on them expired."""
        if n < 0:
            raise ValueError(f"lease_expired: n must be >= 0, not {n}")
        with self._lock:
            self._lease_expiries += n

    # --- probes ----------------------------------------------------------------------

    def ping(self) -> None:
        """``SELECT 1`` on the attached store; raises what the database raised."""
        if self._store is None:
            raise RuntimeError("no store attached")
        with self._store._connect() as conn:
            conn.execute(sa.text("SELECT 1")).scalar_one()

    def store_problem(self, timeout: float) -> str | None:
        """``None`` when :meth:`ping` answers within ``timeout`` seconds, else why not.

        The ping runs on a thread of its own; while one is still waiting on a hung
        database, later calls answer at once (not ready) instead of piling up threads.
        """
        with self._probe_lock:
            if self._probe is not None and self._probe.is_alive():
                return f"the store has not answered SELECT 1 for over {timeout:g} s"
            done = threading.Event()
            outcome: list[str | None] = [None]

            def ping() -> None:
                try:
                    self.ping()
                except Exception as exc:  # noqa: BLE001 -- reported as the reason
                    lines = str(exc).strip().splitlines()
                    outcome[0] = (f"the store did not answer SELECT 1: {type(exc).__name__}"
                                  + (f": {lines[0]}" if lines else ""))
                finally:
                    done.set()

            self._probe = threading.Thread(target=ping, name="docpipe-store-probe", daemon=True)
            self._probe.start()
        if not done.wait(timeout):
            return f"the store did not answer SELECT 1 within {timeout:g} s"
        return outcome[0]

    def not_ready(self) -> str | None:
        """Why the engine is not ready (the readiness callback), or ``None``; a callback that
        raises is not ready, with its error as the reason."""
        check = self._ready
        if check is None:
            return None
        try:
            return check()
        except Exception as exc:  # noqa: BLE001 -- a probe reports, it does not crash
            return f"readiness check failed: {type(exc).__name__}: {exc}"

    # --- the exposition --------------------------------------------------------------

    def render(self) -> bytes:
        """Every metric in Prometheus' text format (:data:`CONTENT_TYPE`), gauges queried now."""
        return generate_latest(self.registry)

    # --- counting (on the writer thread) ---------------------------------------------

    def _count(self, written: Written, store: Any) -> None:
        """Add one committed round of ``store``'s writer to the counters."""
        started, tasks, ended, reviews = written
        run_flow = self._run_flow
        for start in started:
            flow_id = start[2]
            if flow_id is not None:
                run_flow[start[0]] = flow_id
        ends: list[tuple[str, int | None, str]] = []
        for end in ended:
            if not isinstance(end, RunResumed):
                ends.append((end[0], run_flow.pop(end[0], None), end[1]))
        flow_names = self._flow_names_of(store, ends) if ends else {}
        by_status = Counter(map(_block_status, tasks))
        durations: dict[str, list[float]] = {}
        failures: list[tuple[str, str]] = []
        for task in tasks:  # a plain loop: once per task
            status = task[4]
            if status == _SKIPPED:
                continue
            if status == _FAILED:
                failures.append((task[2] or "", task[8] or ""))
            begun, finished = task[5], task[6]
            if finished is not None and begun is not None:
                durations.setdefault(task[2] or "", []).append(finished - begun)
        with self._lock:
            self._flow_runs.update((flow_names.get(run_id, ""), status) for run_id, _, status in ends)
            for (block, status), n in by_status.items():
                self._tasks[(block or "", status)] += n
            self._failures.update(failures)
            for block, values in durations.items():
                hist = self._durations.get(block)
                if hist is None:
                    hist = self._durations[block] = _Histogram()
                for d in values:
                    hist.buckets[bisect.bisect_left(BUCKETS, d)] += 1  # the first bound >= d: "le"
                hist.count += len(values)
                hist.total += sum(values)
            self._reviews += len(reviews)

    def _flow_names_of(self, store: Any, ends: list[tuple[str, int | None, str]]) -> dict[str, str]:
        """The flow name of each ended run, by run id. A run this server did not see start
        (resumed, or started before it) is looked up by id; flow names are cached."""
        flow_of = {run_id: flow_id for run_id, flow_id, _ in ends if flow_id is not None}
        unknown = [run_id for run_id, flow_id, _ in ends if flow_id is None]
        try:
            if unknown:
                with store._connect() as conn:
                    for start in range(0, len(unknown), 500):
                        query = sa.select(flow_runs.c.id, flow_runs.c.flow_id).where(
                            flow_runs.c.id.in_(unknown[start:start + 500]))
                        flow_of.update({run_id: flow_id for run_id, flow_id in conn.execute(query)})
            missing = {f for f in flow_of.values() if f not in self._flow_names}
            if missing:
                with store._connect() as conn:
                    query = sa.select(flows.c.id, flows.c.name).where(flows.c.id.in_(missing))
                    self._flow_names.update({flow_id: name for flow_id, name in conn.execute(query)})
        except sa.exc.SQLAlchemyError:
            log.warning("telemetry: flow names of %d ended runs could not be read", len(ends), exc_info=True)
        names = self._flow_names
        return {run_id: names.get(flow_id, "") for run_id, flow_id in flow_of.items()}

    # --- the scrape (on the server's thread) -----------------------------------------

    def _snapshot(self) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int], dict[tuple[str, str], int],
                                 dict[str, tuple[list[int], int, float]], int, int]:
        """A consistent copy of the counters."""
        with self._lock:
            return (dict(self._flow_runs), dict(self._tasks), dict(self._failures),
                    {b: (list(h.buckets), h.count, h.total) for b, h in self._durations.items()},
                    self._reviews, self._lease_expiries)

    def _gauges(self) -> Iterator[Metric]:
        """The gauges of shared state, each from one bounded query; ``docpipe_store_up`` 0
        (and the rest left out) when the store does not answer, or while another scrape
        still waits for it (a hung database holds one request, not every scrape's)."""
        store = self._store
        if store is None:
            return
        up = GaugeMetricFamily("docpipe_store_up", "Whether the store answered this scrape's queries")
        if not self._gauge_lock.acquire(blocking=False):
            up.add_metric([], 0)
            yield up
            return
        try:
            found = self._query_gauges(store)
        finally:
            self._gauge_lock.release()
        up.add_metric([], 0 if found is None else 1)
        yield up
        if found is not None:
            yield from found

    def _query_gauges(self, store: Any) -> list[Metric] | None:
        """Runs in flight, jobs by source, sink backlog; ``None`` when the store failed."""
        in_flight = GaugeMetricFamily("docpipe_flow_runs_in_flight",
                                      "Flow runs recorded as running, by every engine on this store")
        jobs = GaugeMetricFamily("docpipe_jobs", "Jobs queued and running, by source",
                                 labels=["source", "status"])
        backlog = GaugeMetricFamily("docpipe_sink_backlog", "Deliveries pending, by sink", labels=["sink"])
        try:
            with store._connect() as conn:
                running = conn.execute(IN_FLIGHT).scalar_one()
            in_flight.add_metric([], running)
            queue = getattr(store, "jobs", None)
            if queue is not None:
                for source, counts in sorted(queue.depth().items()):
                    for status, n in sorted(counts.items()):
                        jobs.add_metric([source, str(status)], n)
            outbox = getattr(store, "outbox", None)
            if outbox is not None:
                for sink, n in sorted(outbox.backlog().items()):
                    backlog.add_metric([sink], n)
        except sa.exc.SQLAlchemyError:
            log.warning("telemetry: the store did not answer the scrape's queries", exc_info=True)
            return None
        return [in_flight, jobs, backlog]

    def _pool_gauges(self) -> Iterator[Metric]:
        stats = self._pools
        if stats is None:
            return
        workers = GaugeMetricFamily("docpipe_pool_workers", "Workers of each block's pool", labels=["block"])
        busy = GaugeMetricFamily("docpipe_pool_busy", "Workers of each block's pool running a call",
                                 labels=["block"])
        try:
            pools = list(stats())
        except Exception:  # noqa: BLE001 -- the rest of the scrape still answers
            log.warning("telemetry: the pool stats callback failed", exc_info=True)
            return
        totals: dict[str, list[float]] = {}  # a block may have several pools (other params): summed
        for pool in pools:
            total = totals.setdefault(str(pool["block"]), [0, 0])
            total[0] += pool["workers"]
            total[1] += pool["busy"]
        for block, (n, m) in sorted(totals.items()):
            workers.add_metric([block], n)
            busy.add_metric([block], m)
        yield workers
        yield busy

    def _source_gauges(self) -> Iterator[Metric]:
        statuses = self._sources
        if statuses is None:
            return
        try:
            found = list(statuses())
        except Exception:  # noqa: BLE001 -- the rest of the scrape still answers
            log.warning("telemetry: the source status callback failed", exc_info=True)
            return
        families: dict[str, GaugeMetricFamily] = {}
        for status in found:
            name = str(status.get("name", status.get("source", "")))
            for key, value in status.items():
                if key in ("name", "source") or not isinstance(value, int | float):
                    continue
                metric = "docpipe_source_" + _NOT_A_NAME.sub("_", key)
                family = families.get(metric)
                if family is None:
                    family = families[metric] = GaugeMetricFamily(metric, f"Sources' status field {key!r}",
                                                                  labels=["source"])
                family.add_metric([name], float(value))
        yield from families.values()


class _Collector(Collector):
    """What :class:`Telemetry` exposes, built at each scrape."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def describe(self) -> list[Metric]:
        return []  # the families depend on what has been counted: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        t = self.telemetry
        flow_runs_, tasks, failures, durations, reviews, expiries = t._snapshot()
        runs = CounterMetricFamily("docpipe_flow_runs", "Flow runs that ended, by flow and status",
                                   labels=["flow", "status"])
        for (flow, status), n in sorted(flow_runs_.items()):
            runs.add_metric([flow, status], n)
        yield runs
        task_runs = CounterMetricFamily("docpipe_task_runs", "Task attempts by block and status",
                                        labels=["block", "status"])
        retries = CounterMetricFamily("docpipe_task_retries", "Task attempts that were retried", labels=["block"])
        for (block, status), n in sorted(tasks.items()):
            task_runs.add_metric([block, status], n)
            if status == _RETRYING:
                retries.add_metric([block], n)
        yield task_runs
        yield retries
        failed = CounterMetricFamily("docpipe_task_failures", "Final task failures by kind",
                                     labels=["block", "error_kind"])
        for (block, kind), n in sorted(failures.items()):
            failed.add_metric([block, kind], n)
        yield failed
        hist = HistogramMetricFamily("docpipe_task_duration_seconds", "Task duration by block", labels=["block"])
        for block, (buckets, count, total) in sorted(durations.items()):
            cumulative, pairs = 0, []
            for bound, n in zip(BUCKETS, buckets, strict=False):
                cumulative += n
                pairs.append((str(bound), cumulative))
            hist.add_metric([block], [*pairs, ("+Inf", count)], total)
        yield hist
        yield CounterMetricFamily("docpipe_review_tasks_created", "Review tasks created (runs waiting for a person)",
                                  value=reviews)
        yield CounterMetricFamily("docpipe_lease_expiries", "Jobs taken over after another server's lease expired",
                                  value=expiries)
        yield from t._gauges()
        yield from t._pool_gauges()
        yield from t._source_gauges()
