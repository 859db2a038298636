"""Memory flat in batch size: peak RSS of one batch of N documents through the 10-step no-op
flow (benchmarks/engine_overhead.py's), recorded in SQLite, for several N.

    python benchmarks/batch_memory.py [--sizes 10000,100000,1000000] [--json]

Each size runs in a fresh process (``--one N`` is that child): ``Engine(Store(sqlite file),
keep_results=False)`` over a lazy generator of N document names (never a list), so the
inputs are recorded in chunks and admitted from the store, and only what is in flight is held.
Reported per size: peak RSS (VmHWM of the child, MiB), wall time, µs/task (wall / (N * 10)),
and the ratios against the smallest size. The check: every run succeeded (the store's
counts) and the number of task records is N * 10. Targets (issue 17): 1 M documents peak
≤ 300 MiB, µs/task no worse than at 10 k.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TARGET_MIB = 300


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def one(n: int) -> dict[str, Any]:
    import sqlalchemy as sa
    from engine_overhead import STEPS, make_plan

    from docpipe.engine import Engine
    from docpipe.store import Store
    from docpipe.store.schema import task_runs

    plan = make_plan()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db", blob_dir=f"{tmp}/blobs")
        docs = (f"/bench/doc-{i:07d}.pdf" for i in range(n))
        t0 = time.perf_counter()
        with Engine(store, keep_results=False, work_dir=f"{tmp}/work") as engine:
            result = engine.run(plan, docs)
        seconds = time.perf_counter() - t0
        with store.engine.connect() as conn:
            tasks = conn.execute(sa.select(sa.func.count()).select_from(task_runs)).scalar_one()
        store.close()
    if result.counts.get("succeeded") != n or tasks != n * STEPS:
        raise SystemExit(f"check failed: {result.counts} for {n} documents, {tasks} task records")
    return {"documents": n, "tasks": n * STEPS, "seconds": round(seconds, 2),
            "us_per_task": round(seconds / (n * STEPS) * 1e6, 2), "peak_rss_mib": round(peak_rss_mib(), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return 0
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        proc = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        if not args.json:
            r = rows[-1]
            print(f"{r['documents']:>9,} documents: peak {r['peak_rss_mib']:7.1f} MiB, {r['seconds']:8.1f} s, "
                  f"{r['us_per_task']:6.2f} µs/task", file=sys.stderr)
    base = rows[0]
    for r in rows:
        r["rss_ratio"] = round(r["peak_rss_mib"] / base["peak_rss_mib"], 2)
        r["us_ratio"] = round(r["us_per_task"] / base["us_per_task"], 2)
    largest = rows[-1]
    report = {"sizes": rows, "target": {"peak_rss_mib": TARGET_MIB, "documents": largest["documents"],
                                        "met": largest["peak_rss_mib"] <= TARGET_MIB
                                        and largest["us_ratio"] <= 1.2}}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
