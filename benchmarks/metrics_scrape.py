"""The cost of a ``/metrics`` scrape on a big store, and of the counters on the engine.

    python benchmarks/metrics_scrape.py [--tasks N] [--runs M] [--pg URL] [--observer] [--json]

Measures, in one process:

* **Scrape.** A store is filled with ``--tasks`` task runs (default 1,000,000) over
  ``--runs`` flow runs (default 100,000; 200 of them still running), 100,000 finished jobs
  (50 queued, 10 running) and 100,000 delivered deliveries (20 pending), with bulk
  inserts. Then, each repeated and the median reported:

  - ``render_empty``: :meth:`docpipe.telemetry.Telemetry.render` on an empty store;
  - ``render_full``: the same on the full store (counters plus the bounded gauge queries:
    runs in flight, jobs by source, sink backlog);
  - ``aggregate_full``: :func:`docpipe.metrics.exposition` (what ``docpipe metrics``
    prints: aggregate queries over every row) on the full store.

  Ratios: ``render_full / render_empty`` (near 1: the scrape does not grow with the
  history) and ``aggregate_full / render_full``. On PostgreSQL (``--pg URL``, a database
  the script may wipe: it drops every table) the plan of the runs-in-flight query is
  reported too, after ``ANALYZE``.

* **Observer** (``--observer``): what attaching a :class:`~docpipe.telemetry.Telemetry`
  costs the engine: the flow of ``engine_overhead.py`` (10 inline no-op steps) over
  ``--observer-runs`` documents on a fresh SQLite store, with and without the telemetry
  attached, alternating, in µs per task (median of the repetitions).

Checks (exit status 1 when one fails): the full scrape shows 200 runs in flight, 50
queued and 10 running jobs and 20 pending deliveries; the aggregate view counts every
task run; with the observer, the counters equal the store's rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from docpipe.metrics import exposition
from docpipe.status import DeliveryStatus, JobStatus, Status
from docpipe.store import Store, new_id
from docpipe.store.bulk import BulkStatement, insert_builder
from docpipe.store.schema import deliveries, flow_runs, jobs, task_runs
from docpipe.telemetry import IN_FLIGHT, Telemetry

BLOCKS = [f"bench.block{i}" for i in range(10)]
CHUNK = 20_000


class CheckFailed(Exception):
    """A measurement produced wrong figures: they must not be trusted."""


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def _bulk(store: Store, table: sa.Table, fields: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    statement = BulkStatement(f"bench.{table.name}", insert_builder(table, fields), fields, store.engine.dialect)
    with store.engine.begin() as conn:
        statement.execute(conn, rows)


def fill(store: Store, n_tasks: int, n_runs: int, say: Callable[[str], None]) -> float:
    """Fill ``store`` with the rows the module docstring lists; return the seconds it took."""
    began = time.perf_counter()
    flow_id = store.put_flow("bench", "1", "h", {"name": "bench", "version": "1", "steps": []})
    batch_id = store.start_batch(flow_id, {}, 0)
    per_run = max(1, n_tasks // n_runs)
    run_fields = ("id", "batch_id", "flow_id", "document", "status", "started_at", "finished_at", "error_kind")
    task_fields = ("flow_run_id", "step", "block", "attempt", "status", "started_at", "finished_at", "worker",
                   "error_kind")
    now = time.time() - 86_400
    runs: list[tuple[Any, ...]] = []
    tasks: list[tuple[Any, ...]] = []
    written = shown = 0
    for r in range(n_runs):
        run_id = new_id()
        running = r >= n_runs - 200
        failed = not running and r % 50 == 7
        status = Status.RUNNING if running else Status.FAILED if failed else Status.SUCCEEDED
        t0 = now + r * 0.01
        runs.append((run_id, batch_id, flow_id, f"/in/doc{r}.pdf", str(status), t0,
                     None if running else t0 + 0.5, "corrupt" if failed else None))
        for i in range(per_run):
            if written >= n_tasks:
                break
            task_status = Status.FAILED if failed and i == per_run - 1 else (
                Status.RETRYING if r % 97 == 3 and i == 2 else Status.SUCCEEDED)
            tasks.append((run_id, f"s{i}", BLOCKS[i % len(BLOCKS)], 1, str(task_status), t0 + i * 0.01,
                          t0 + i * 0.01 + 0.004 * (1 + i % 3), "thread-1",
                          "corrupt" if task_status == Status.FAILED else None))
            written += 1
        if len(tasks) >= CHUNK:
            _bulk(store, flow_runs, run_fields, runs)
            _bulk(store, task_runs, task_fields, tasks)
            runs, tasks = [], []
            if written >= shown + n_tasks // 5:
                shown = written
                say(f"  {written:,} task runs written")
    if runs or tasks:
        _bulk(store, flow_runs, run_fields, runs)
        _bulk(store, task_runs, task_fields, tasks)
    job_fields = ("id", "kind", "flow", "source", "status", "created_at", "claims")
    job_rows = [(new_id(), "document", "bench", "watch:/in" if j % 2 else "api",
                 str(JobStatus.FINISHED if j < 100_000 else JobStatus.QUEUED if j < 100_050 else JobStatus.RUNNING),
                 now + j, 1) for j in range(100_060)]
    for start in range(0, len(job_rows), CHUNK):
        _bulk(store, jobs, job_fields, job_rows[start:start + CHUNK])
    delivery_fields = ("sink", "run_id", "status", "attempts", "next_attempt_at", "created_at")
    delivery_rows = [("results.csv" if d % 2 else "webhook", new_id(),
                      str(DeliveryStatus.DELIVERED if d < 100_000 else DeliveryStatus.PENDING), 1, now, now)
                     for d in range(100_020)]
    for start in range(0, len(delivery_rows), CHUNK):
        _bulk(store, deliveries, delivery_fields, delivery_rows[start:start + CHUNK])
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - began


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median seconds of ``repeat`` calls of ``fn``, and its last result."""
    seconds, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds), out


def in_flight_plan(store: Store) -> str:
    sql = str(IN_FLIGHT.compile(store.engine, compile_kwargs={"literal_binds": True}))
    with store.engine.connect() as conn:
        if store.engine.dialect.name == "sqlite":
            return " ".join(str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
        return " / ".join(row[0].strip() for row in conn.exec_driver_sql(f"EXPLAIN {sql}"))


def bench_scrape(url: str, n_tasks: int, n_runs: int, repeat: int, say: Callable[[str], None]) -> dict[str, Any]:
    """The scrape figures on the database at ``url`` (emptied first when PostgreSQL)."""
    if url.startswith("postgresql"):
        _wipe(url)
    with Store(url) as store:
        telemetry = Telemetry()
        telemetry.attach(store)
        empty, _ = timed(telemetry.render, repeat)
        say(f"  render, empty store: {empty * 1000:.2f} ms; filling …")
        fill_s = fill(store, n_tasks, n_runs, say)
        say(f"  filled in {fill_s:.1f} s")
        full, text = timed(telemetry.render, repeat)
        found = samples(text)
        aggregate, agg_text = timed(lambda: exposition(store), max(1, repeat // 10))
        plan = in_flight_plan(store)
    checks = {
        "docpipe_flow_runs_in_flight": found.get(("docpipe_flow_runs_in_flight", frozenset())),
        "queued jobs": sum(v for (n, labels), v in found.items()
                           if n == "docpipe_jobs" and ("status", "queued") in labels),
        "running jobs": sum(v for (n, labels), v in found.items()
                            if n == "docpipe_jobs" and ("status", "running") in labels),
        "pending deliveries": sum(v for (n, _), v in found.items() if n == "docpipe_sink_backlog"),
        "task runs (aggregate)": sum(v for (n, _), v in samples(agg_text).items() if n == "docpipe_task_runs_total"),
    }
    want = {"docpipe_flow_runs_in_flight": 200, "queued jobs": 50, "running jobs": 10, "pending deliveries": 20,
            "task runs (aggregate)": n_tasks}
    if checks != want:
        raise CheckFailed(f"scrape figures {checks} are not {want}")
    return {"database": url.split(":", 1)[0], "task_runs": n_tasks, "flow_runs": n_runs, "fill_s": round(fill_s, 1),
            "render_empty_ms": round(empty * 1000, 3), "render_full_ms": round(full * 1000, 3),
            "aggregate_full_ms": round(aggregate * 1000, 1),
            "ratio_full_over_empty": round(full / empty, 2), "ratio_aggregate_over_render": round(aggregate / full, 1),
            "in_flight_plan": plan}


def _wipe(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
    finally:
        engine.dispose()


def bench_observer(runs: int, repeat: int, say: Callable[[str], None]) -> dict[str, Any]:
    """µs per task of engine_overhead's flow with and without a Telemetry attached."""
    from engine_overhead import documents, make_plan

    from docpipe.engine import Engine

    plan = make_plan()
    times: dict[str, list[float]] = {"without": [], "with": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):
            for side in ("without", "with"):
                with Store(f"sqlite:///{tmp}/{side}{i}.db") as store:
                    telemetry = Telemetry(process=False)
                    if side == "with":
                        telemetry.attach(store)
                    with Engine(store, workers=1) as engine:
                        engine.run(plan, documents(200, "warm"))
                        t0 = time.perf_counter()
                        result = engine.run(plan, documents(runs))
                        times[side].append(time.perf_counter() - t0)
                    if result.counts.get("succeeded") != runs:
                        raise CheckFailed(f"observer run: {result.counts}")
                    if side == "with":
                        store.writer.flush()
                        found = samples(telemetry.render())
                        counted = found.get(("docpipe_flow_runs_total",
                                             frozenset({("flow", plan.name), ("status", "succeeded")})))
                        if counted != runs + 200:
                            raise CheckFailed(f"telemetry counted {counted} flow runs, not {runs + 200}")
                say(f"  {side} telemetry: {times[side][-1] / (runs * 10) * 1e6:.2f} µs/task")
    us = {side: statistics.median(t) / (runs * 10) * 1e6 for side, t in times.items()}
    return {"flow_runs": runs, "repeat": repeat, "us_per_task_without": round(us["without"], 2),
            "us_per_task_with": round(us["with"], 2), "all_seconds": times}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=1_000_000, help="task runs to fill the store with")
    ap.add_argument("--runs", type=int, default=100_000, help="flow runs they belong to")
    ap.add_argument("--repeat", type=int, default=20, help="renders timed (the aggregate view: a tenth)")
    ap.add_argument("--pg", metavar="URL", help="also on this PostgreSQL database (its tables are dropped)")
    ap.add_argument("--no-sqlite", action="store_true", help="skip the SQLite scrape")
    ap.add_argument("--observer", action="store_true", help="also measure the observer's cost on the engine")
    ap.add_argument("--observer-runs", type=int, default=5000)
    ap.add_argument("--observer-repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print only the JSON report")
    args = ap.parse_args(argv)

    def say(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    report: dict[str, Any] = {"scrape": []}
    try:
        if not args.no_sqlite:
            with tempfile.TemporaryDirectory() as tmp:
                say("SQLite:")
                report["scrape"].append(bench_scrape(f"sqlite:///{Path(tmp) / 'big.db'}", args.tasks, args.runs,
                                                     args.repeat, say))
        if args.pg:
            say("PostgreSQL:")
            report["scrape"].append(bench_scrape(args.pg, args.tasks, args.runs, args.repeat, say))
        if args.observer:
            say("Observer:")
            report["observer"] = bench_observer(args.observer_runs, args.observer_repeat, say)
    except CheckFailed as exc:
        print(f"check failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
