"""Engine overhead: a flow of 10 chained no-op inline steps, N flow runs, every transition recorded.

    python benchmarks/engine_overhead.py [--runs N] [--repeat R] [--luigi-runs M] [--json]

Measures, in one process and on one machine:

* ``docpipe_recorded``: ``Engine(Store(sqlite file))`` running N documents through the
  10-step chain in one batch; every flow run and task run is written to SQLite. The time
  is the wall time of ``engine.run`` (which flushes the store's writer before returning).
* ``docpipe_unrecorded``: the same with ``Engine(None)`` (no records), so the cost of
  recording shows separately.
* ``plain_python``: the same work as plain function calls: per document, 10 calls that
  each take and return a dict.
* ``sqlite_bare_loop``: the plain calls plus one 11-column task record per call, written
  with ``sqlite3`` ``executemany`` in batches of 1000 (WAL mode, ``synchronous=NORMAL``) to
  a table shaped like docpipe's ``task_runs``: a floor for "run it and record it".
* ``luigi`` (if importable): a chain of 10 Luigi tasks per flow run, all flow runs in one
  ``luigi.build(..., local_scheduler=True, workers=1)``, with a real ``complete()``.

Per-task overhead is wall time / (flow runs * 10), in microseconds. The JSON report goes
to stdout (``--json`` prints only that; without it, a readable summary goes to stderr as
well). Every measurement is checked (every flow run succeeded and its ``k10`` equals its
input; the store holds runs * 10 task records) and the script exits 1 if a check fails.
The exit status does not depend on the target being met; ``target.met`` says whether it was.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import docpipe
from docpipe.blocks import Block, Manifest, State
from docpipe.engine import SUCCEEDED, Engine
from docpipe.planner import Plan, build_plan
from docpipe.plugins import Registry
from docpipe.store import new_id

STEPS = 10
TARGET_US_PER_TASK = 50.0
SQLITE_BATCH = 1000


class CheckFailed(Exception):
    """A benchmark produced wrong results; its figures must not be trusted."""


# --- the flow -------------------------------------------------------------------------


class NoOp(Block):
    """Returns its input: ``value`` in, the same string out as ``out``."""

    manifest = Manifest(
        name="bench.noop",
        version="1.0",
        reads={"value": str},
        writes={"out": str},
        runtime="inline",
        description="benchmark no-op: returns its input",
    )

    def run(self, batch: list[State], params: BaseModel) -> list[Any]:
        return [{"out": item["value"]} for item in batch]


class BenchPlugin:
    """A plugin object (not a module) that registers the no-op block."""

    @docpipe.hookimpl
    def register_blocks(self, register: Callable[[type[Block]], None]) -> None:
        register(NoOp)


def flow_definition(steps: int = STEPS) -> dict[str, Any]:
    """``path -> k1 -> k2 -> ... -> k{steps}``, one no-op step per arrow."""
    chain = []
    for i in range(steps):
        src = "path" if i == 0 else f"k{i}"
        chain.append({"id": f"s{i}", "block": "bench.noop",
                      "inputs": {"value": src}, "outputs": {"out": f"k{i + 1}"}})
    return {"name": "bench-noop-chain", "version": "1.0",
            "description": f"{steps} chained no-op inline steps",
            "outputs": [f"k{steps}"], "steps": chain}


def make_plan() -> Plan:
    registry = Registry(entry_points=False, extra=[BenchPlugin()])
    if registry.broken:
        raise CheckFailed(f"bench plugin did not load: {registry.broken[0].error}")
    return build_plan(flow_definition(), registry)


def documents(n: int, tag: str = "doc") -> list[str]:
    # Just strings: the no-op block never opens them.
    return [f"/bench/{tag}-{i:06d}.pdf" for i in range(n)]


# --- measurements ---------------------------------------------------------------------


def figures(runs: int, seconds: list[float]) -> dict[str, Any]:
    """Best and median of repeated measurements of ``runs`` flow runs."""
    tasks = runs * STEPS
    best, median = min(seconds), statistics.median(seconds)
    return {
        "runs": runs,
        "tasks": tasks,
        "repeats": len(seconds),
        "seconds": round(best, 6),
        "us_per_task": round(best / tasks * 1e6, 3),
        "flow_runs_per_s": round(runs / best, 1),
        "median_seconds": round(median, 6),
        "median_us_per_task": round(median / tasks * 1e6, 3),
        "median_flow_runs_per_s": round(runs / median, 1),
        "all_seconds": [round(s, 6) for s in seconds],
    }


def check_results(result: Any, docs: list[str], what: str) -> None:
    counts = result.counts
    if len(result.results) != len(docs) or counts.get(SUCCEEDED) != len(docs):
        bad = next((r for r in result.results if r.status != SUCCEEDED), None)
        detail = f"; first failure: {bad.step}: {bad.error}" if bad else ""
        raise CheckFailed(f"{what}: {counts} for {len(docs)} documents{detail}")
    key = f"k{STEPS}"
    for r, doc in zip(result.results, docs, strict=True):
        if r.document != doc or r.outputs.get(key) != doc:
            raise CheckFailed(f"{what}: document {doc!r} gave {key}={r.outputs.get(key)!r} "
                              f"(result for {r.document!r})")


def check_store(db: Path, batch_id: str | None, runs: int) -> None:
    con = sqlite3.connect(db)
    try:
        n_tasks = con.execute("SELECT count(*) FROM task_runs").fetchone()[0]
        n_ok = con.execute("SELECT count(*) FROM task_runs WHERE status = ?",
                           (SUCCEEDED,)).fetchone()[0]
        n_runs = con.execute("SELECT count(*) FROM flow_runs WHERE batch_id = ? AND status = ?",
                             (batch_id, SUCCEEDED)).fetchone()[0]
        n_steps = con.execute("SELECT count(DISTINCT step) FROM task_runs").fetchone()[0]
    finally:
        con.close()
    want = runs * STEPS
    if n_tasks != want or n_ok != want or n_steps != STEPS or n_runs != runs:
        raise CheckFailed(f"store {db}: {n_tasks} task records ({n_ok} succeeded, {n_steps} "
                          f"distinct steps) and {n_runs} succeeded flow runs; expected {want} "
                          f"task records over {STEPS} steps and {runs} flow runs")


def bench_docpipe(plan: Plan, runs: int, repeat: int, tmp: Path, recorded: bool) -> dict[str, Any]:
    from docpipe.store import Store

    docs = documents(runs)
    seconds = []
    for rep in range(repeat):
        store = None
        db = tmp / f"docpipe-{'rec' if recorded else 'norec'}-{rep}.db"
        if recorded:
            store = Store("sqlite:///" + str(db))  # a fresh file for every repetition
        engine = Engine(store, workers=1)
        try:
            t0 = time.perf_counter()
            result = engine.run(plan, docs)  # flushes the store's writer before returning
            seconds.append(time.perf_counter() - t0)
        finally:
            engine.close()
            if store is not None:
                store.close()
        check_results(result, docs, "docpipe" + (" (recorded)" if recorded else ""))
        if recorded:
            check_store(db, result.batch_id, runs)
    return figures(runs, seconds)


def noop(state: dict[str, Any]) -> dict[str, Any]:
    return {"out": state["value"]}


CHAIN = [("path" if i == 0 else f"k{i}", f"k{i + 1}") for i in range(STEPS)]


def bench_plain(runs: int, repeat: int) -> dict[str, Any]:
    docs = documents(runs)
    key = f"k{STEPS}"
    seconds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        outputs = []
        for doc in docs:
            state = {"path": doc}
            for src, dst in CHAIN:
                state[dst] = noop({"value": state[src]})["out"]
            outputs.append({key: state[key]})
        seconds.append(time.perf_counter() - t0)
        if [o[key] for o in outputs] != docs:
            raise CheckFailed("plain python: wrong outputs")
    return figures(runs, seconds)


# docpipe.store.schema.task_runs as SQLAlchemy creates it on SQLite (rowid key, one index).
_TASK_TABLE = """
CREATE TABLE task_runs (
    id INTEGER NOT NULL, flow_run_id VARCHAR(64) NOT NULL, step VARCHAR(255) NOT NULL,
    block VARCHAR(255), attempt INTEGER NOT NULL, status VARCHAR(32) NOT NULL,
    started_at DOUBLE, finished_at DOUBLE, worker VARCHAR(64), error_kind VARCHAR(64),
    error TEXT, traceback TEXT, PRIMARY KEY (id))
"""
_TASK_INDEX = "CREATE INDEX ix_task_runs_flow_run_id ON task_runs (flow_run_id)"
_TASK_INSERT = ("INSERT INTO task_runs (flow_run_id, step, block, attempt, status, started_at, "
                "finished_at, worker, error_kind, error, traceback) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def bench_sqlite_loop(runs: int, repeat: int, tmp: Path, index: bool = True) -> dict[str, Any]:
    """The plain calls plus one task record each, written in batches: no engine at all.

    With ``index`` the table has docpipe's index on ``flow_run_id``; its keys are the
    engine's run ids (:func:`docpipe.store.new_id`: time-ordered, so index inserts append).
    """
    docs = documents(runs)
    key = f"k{STEPS}"
    steps = [(f"s{i}", src, dst) for i, (src, dst) in enumerate(CHAIN)]
    seconds = []
    for rep in range(repeat):
        db = tmp / f"bare-{'idx' if index else 'noidx'}-{rep}.db"
        con = sqlite3.connect(db, isolation_level=None)
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("PRAGMA synchronous = NORMAL")
        con.execute(_TASK_TABLE)
        if index:
            con.execute(_TASK_INDEX)
        now = time.time

        def write(rows: list[tuple[Any, ...]], con: sqlite3.Connection = con) -> None:
            con.execute("BEGIN")
            con.executemany(_TASK_INSERT, rows)
            con.execute("COMMIT")

        try:
            t0 = time.perf_counter()
            rows: list[tuple[Any, ...]] = []
            outputs = []
            for doc in docs:
                run_id = new_id()
                state = {"path": doc}
                for step, src, dst in steps:
                    started = now()
                    state[dst] = noop({"value": state[src]})["out"]
                    rows.append((run_id, step, "bench.noop", 1, SUCCEEDED, started, now(),
                                 "main", None, None, None))
                    if len(rows) >= SQLITE_BATCH:
                        write(rows)
                        rows = []
                outputs.append(state[key])
            if rows:
                write(rows)
            seconds.append(time.perf_counter() - t0)
            n = con.execute("SELECT count(*) FROM task_runs").fetchone()[0]
        finally:
            con.close()
        if outputs != docs or n != runs * STEPS:
            raise CheckFailed(f"sqlite bare loop: {n} records for {runs * STEPS} tasks, "
                              f"outputs {'ok' if outputs == docs else 'wrong'}")
    return figures(runs, seconds)


def bench_luigi(runs: int, repeat: int) -> dict[str, Any]:
    try:
        import luigi
    except ImportError as exc:
        return {"skipped": f"luigi is not installed ({exc}); pip install 'docpipe[bench]'"}

    done: set[str] = set()
    values: dict[str, str] = {}

    class Step(luigi.Task):  # type: ignore[misc]
        doc = luigi.Parameter()
        step = luigi.IntParameter()
        rep = luigi.IntParameter()

        def requires(self) -> Any:
            if self.step > 1:
                return Step(doc=self.doc, step=self.step - 1, rep=self.rep)
            return []

        def complete(self) -> bool:
            return self.task_id in done

        def run(self) -> None:
            value = self.doc if self.step == 1 else values[self.requires().task_id]
            values[self.task_id] = noop({"value": value})["out"]
            done.add(self.task_id)

    docs = documents(runs, "luigi")
    seconds = []
    for rep in range(repeat + 1):  # the first round is a warm-up
        done.clear()
        values.clear()
        finals = [Step(doc=d, step=STEPS, rep=rep) for d in docs]
        t0 = time.perf_counter()
        ok = luigi.build(finals, local_scheduler=True, workers=1, log_level="ERROR")
        elapsed = time.perf_counter() - t0
        if not ok or len(done) != runs * STEPS or [values[t.task_id] for t in finals] != docs:
            raise CheckFailed(f"luigi: build returned {ok}, {len(done)} of {runs * STEPS} "
                              "tasks done")
        if rep:
            seconds.append(elapsed)
    out = figures(runs, seconds)
    out["version"] = getattr(luigi, "__version__", None)
    return out


# --- the report -----------------------------------------------------------------------


def machine() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {"cores": os.cpu_count(), "usable_cores": usable,
            "python": platform.python_version(), "implementation": platform.python_implementation(),
            "platform": platform.platform(), "docpipe": docpipe.__version__}


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("inf")


def summary(report: dict[str, Any]) -> str:
    lines = [f"engine overhead: {STEPS} chained no-op inline steps per flow run "
             f"({report['machine']['cores']} cores, Python {report['machine']['python']})"]
    for name in ("docpipe_recorded", "docpipe_unrecorded", "plain_python", "sqlite_bare_loop",
                 "sqlite_bare_loop_no_index", "luigi"):
        f = report[name]
        if "skipped" in f:
            lines.append(f"  {name:<26} skipped: {f['skipped']}")
            continue
        lines.append(f"  {name:<26} {f['runs']:>5} runs  best {f['us_per_task']:>8.2f} us/task "
                     f"{f['flow_runs_per_s']:>8.0f} runs/s  median "
                     f"{f['median_us_per_task']:>8.2f} us/task")
    r, t = report["ratios"], report["target"]
    lines.append(f"  docpipe (recorded) is {r['docpipe_vs_plain']}x plain Python, "
                 f"{r['docpipe_vs_bare_sqlite_loop']}x the bare SQLite loop"
                 + (f"; Luigi is {r['luigi_vs_docpipe']}x docpipe" if r["luigi_vs_docpipe"]
                    else ""))
    lines.append(f"  target <= {t['us_per_task_max']:.0f} us/task with records "
                 f"(median {t['median_us_per_task']:.2f}, best {t['best_us_per_task']:.2f}): "
                 + ("MET" if t["met"] else "MISSED"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5000,
                    help="flow runs (documents, one batch) per docpipe/baseline measurement")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions; best and median reported")
    ap.add_argument("--luigi-runs", type=int, default=20, help="flow runs for Luigi (~2 ms/task)")
    ap.add_argument("--no-luigi", action="store_true", help="skip the Luigi comparison")
    ap.add_argument("--json", action="store_true", help="print only the JSON report")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.repeat < 1 or args.luigi_runs < 1:
        ap.error("--runs, --repeat and --luigi-runs must be >= 1")

    def say(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    try:
        plan = make_plan()
        with tempfile.TemporaryDirectory(prefix="docpipe-bench-") as d:
            tmp = Path(d)
            say("warming up ...")
            warm = tmp / "warm"
            warm.mkdir()
            bench_docpipe(plan, 200, 1, warm, recorded=True)
            bench_docpipe(plan, 200, 1, warm, recorded=False)
            bench_plain(200, 1)
            bench_sqlite_loop(200, 1, warm)
            report: dict[str, Any] = {"machine": machine(), "steps_per_flow_run": STEPS}
            say(f"docpipe, recorded ({args.runs} runs x {args.repeat}) ...")
            report["docpipe_recorded"] = bench_docpipe(plan, args.runs, args.repeat, tmp, True)
            say("docpipe, unrecorded ...")
            report["docpipe_unrecorded"] = bench_docpipe(plan, args.runs, args.repeat, tmp, False)
            say("plain Python ...")
            report["plain_python"] = bench_plain(args.runs, args.repeat)
            say("bare SQLite loop ...")
            report["sqlite_bare_loop"] = bench_sqlite_loop(args.runs, args.repeat, tmp)
            say("bare SQLite loop, no index ...")
            report["sqlite_bare_loop_no_index"] = bench_sqlite_loop(args.runs, args.repeat, tmp,
                                                                    index=False)
            if args.no_luigi:
                report["luigi"] = {"skipped": "--no-luigi"}
            else:
                say(f"Luigi ({args.luigi_runs} runs) ...")
                report["luigi"] = bench_luigi(args.luigi_runs, args.repeat)
    except CheckFailed as exc:
        print(f"engine_overhead: CHECK FAILED: {exc}", file=sys.stderr)
        return 1

    rec = report["docpipe_recorded"]
    report["ratios"] = {
        "docpipe_vs_plain": ratio(rec["us_per_task"], report["plain_python"]["us_per_task"]),
        "docpipe_vs_bare_sqlite_loop": ratio(rec["us_per_task"],
                                             report["sqlite_bare_loop"]["us_per_task"]),
        "docpipe_unrecorded_vs_plain": ratio(report["docpipe_unrecorded"]["us_per_task"],
                                             report["plain_python"]["us_per_task"]),
        "luigi_vs_docpipe": (ratio(report["luigi"]["us_per_task"], rec["us_per_task"])
                             if "us_per_task" in report["luigi"] else None),
    }
    report["target"] = {
        "us_per_task_max": TARGET_US_PER_TASK,
        "flow_runs_per_s_min": 1e6 / (TARGET_US_PER_TASK * STEPS),
        "best_us_per_task": rec["us_per_task"],
        "median_us_per_task": rec["median_us_per_task"],
        "met_by": "median",
        "met": rec["median_us_per_task"] <= TARGET_US_PER_TASK,
    }
    print(json.dumps(report, indent=2))
    say(summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
