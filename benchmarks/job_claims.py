"""Server jobs and the outbox at scale (issue 17): claim throughput, and what a ``/metrics``
scrape's ``depth()`` / ``backlog()`` cost with a million finished rows; not a test.

For SQLite (a fresh file) and, with ``--pg URL`` (``--pg auto``: a private server started
by tests/pg.py), PostgreSQL, each in a fresh store:

1. The baseline: 1,000 unfinished jobs (two sources, 100 of them claimed) and 1,000
   pending deliveries, nothing finished. ``store.jobs.depth()`` and
   ``store.outbox.backlog()`` are timed (median of ``--repeat`` calls after 3 untimed).
2. ``--finished`` finished jobs and as many delivered deliveries (default 1,000,000 each)
   are added in bulk, then ``ANALYZE`` (the statistics a long-running database has), and
   both are timed again: the ratio to step 1 is the figure (1.0: the finished rows cost
   nothing). For contrast, the plain ``GROUP BY status`` count over the whole table (what
   an unbounded query pays) is timed too, and the plans of depth, backlog and the claim's
   pick are printed (``EXPLAIN``).
3. ``--jobs`` document jobs (default 100,000) are submitted with ``submit_many`` in chunks
   of 1,000 (jobs/s), then drained by one claimer with ``claim(limit=--batch, kinds=--kinds)``
   (default 16 and ``document``, the runner's claim; ``any``: a pick per kind)
   with the finished rows still there: jobs/s and ms per claim (each claimed batch is then
   marked finished in one untimed UPDATE: a server holds only what it has in flight, and
   the claim's pick of expired leases reads the running rows), against ``renew`` of 16 held
   jobs (one conditional UPDATE of as many rows: the floor of a write transaction). Before
   the drain, a claim of batch kinds (none queued) behind the queued documents is timed:
   what the runner's second claim costs each round.

    python benchmarks/job_claims.py [--jobs 100000] [--finished 1000000] [--batch 16] [--kinds document|any]
                                    [--pg auto|URL] [--json]

JSON on stdout with ``--json``, a table on stderr. Exits 1 when a check fails (a job claimed
twice or never, a count that is wrong).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from docpipe.store import Store  # noqa: E402
from docpipe.store.jobs import depth_query, pick_query  # noqa: E402
from docpipe.store.outbox import backlog_query  # noqa: E402
from docpipe.store.schema import jobs  # noqa: E402

T0 = 1_700_000_000.0
_BULK = {  # M finished jobs and M delivered deliveries, made by the database itself
    "postgresql": [
        "INSERT INTO jobs (id, kind, flow, source, status, outcome, claims, created_at, started_at, finished_at) "
        "SELECT 'done-' || i, 'document', 'f', 'api', 'finished', 'succeeded', 1, {t0} + i, {t0} + i, {t0} + i "
        "FROM generate_series(1, {m}) AS i",
        "INSERT INTO deliveries (sink, run_id, status, attempts, next_attempt_at, created_at, delivered_at) "
        "SELECT 'csv', 'run-' || i, 'delivered', 1, {t0} + i, {t0} + i, {t0} + i FROM generate_series(1, {m}) AS i",
    ],
    "sqlite": [
        "INSERT INTO jobs (id, kind, flow, source, status, outcome, claims, created_at, started_at, finished_at) "
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {m}) "
        "SELECT 'done-' || i, 'document', 'f', 'api', 'finished', 'succeeded', 1, {t0} + i, {t0} + i, {t0} + i FROM s",
        "INSERT INTO deliveries (sink, run_id, status, attempts, next_attempt_at, created_at, delivered_at) "
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {m}) "
        "SELECT 'csv', 'run-' || i, 'delivered', 1, {t0} + i, {t0} + i, {t0} + i FROM s",
    ],
}


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def timed(call: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` calls of ``call``, after 3 untimed ones."""
    for _ in range(3):
        call()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def plan(store: Store, query: sa.Select[Any]) -> str:
    dialect = store.engine.dialect
    sql = str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    prefix = "EXPLAIN" if dialect.name == "postgresql" else "EXPLAIN QUERY PLAN"
    with store.engine.connect() as conn:
        return " / ".join(str(row[-1]).strip() for row in conn.exec_driver_sql(f"{prefix} {sql}"))


def check(ok: bool, what: str) -> None:
    if not ok:
        log(f"CHECK FAILED: {what}")
        sys.exit(1)


def bench(url: str, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"url": sa.make_url(url).render_as_string(hide_password=True)}
    with Store(url) as store:
        dialect = store.engine.dialect.name
        # 1. the baseline: a small unfinished set, nothing finished
        store.jobs.submit_many([{"kind": "document", "flow": "f", "source": "api", "document": f"u{i}.pdf"}
                                for i in range(500)])
        store.jobs.submit_many([{"kind": "document", "flow": "f", "source": "watch:/in", "document": f"w{i}.pdf"}
                                for i in range(500)])
        store.jobs.claim("bench", limit=100, lease_s=3600)
        store.outbox.enqueue(["csv", "hook"], [f"pending-{i}" for i in range(500)])
        expected_depth = {"api": {"queued": 400, "running": 100}, "watch:/in": {"queued": 500, "running": 0}}
        check(store.jobs.depth() == expected_depth, f"depth {store.jobs.depth()}")
        check(store.outbox.backlog() == {"csv": 500, "hook": 500}, f"backlog {store.outbox.backlog()}")
        depth0 = timed(store.jobs.depth, args.repeat)
        backlog0 = timed(store.outbox.backlog, args.repeat)
        # 2. a million finished rows
        t = time.perf_counter()
        with store.engine.begin() as conn:
            for sql in _BULK[dialect]:
                conn.exec_driver_sql(sql.format(m=args.finished, t0=T0))
        with store.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
        out["bulk_insert_s"] = time.perf_counter() - t
        check(store.jobs.depth() == expected_depth, "depth with finished rows")
        check(store.outbox.backlog() == {"csv": 500, "hook": 500}, "backlog with finished rows")
        depth1 = timed(store.jobs.depth, args.repeat)
        backlog1 = timed(store.outbox.backlog, args.repeat)
        full = sa.text("SELECT status, count(*) FROM jobs GROUP BY status")

        def full_count() -> None:
            with store.engine.connect() as conn:
                conn.execute(full).all()

        full1 = timed(full_count, max(3, args.repeat // 5))
        out["metrics"] = {
            "finished_rows": args.finished,
            "depth_ms_empty": depth0 * 1e3, "depth_ms_finished": depth1 * 1e3, "depth_ratio": depth1 / depth0,
            "backlog_ms_empty": backlog0 * 1e3, "backlog_ms_finished": backlog1 * 1e3,
            "backlog_ratio": backlog1 / backlog0, "full_count_ms": full1 * 1e3, "full_count_vs_depth": full1 / depth1,
        }
        out["plans"] = {
            "depth": plan(store, depth_query(dialect)),
            "backlog": plan(store, backlog_query("pending", dialect)),
            "claim_pick": plan(store, pick_query(dialect, sa.and_(sa.column("status") == "queued",
                                                                  sa.column("kind") == "document"), args.batch)),
        }
        # 3. claims, with the finished rows still there
        store.jobs.release("bench")
        t = time.perf_counter()
        for start in range(0, args.jobs, 1000):
            store.jobs.submit_many([{"kind": "document", "flow": "f", "source": "bulk", "document": f"{i}.pdf"}
                                    for i in range(start, min(args.jobs, start + 1000))])
        submit_s = time.perf_counter() - t
        queued = args.jobs + 1000
        batch_kinds = timed(lambda: store.jobs.claim("claimer", limit=1, lease_s=3600,
                                                     kinds=["run", "retry", "resume", "continue"]), args.repeat)
        kinds = None if args.kinds == "any" else args.kinds.split(",")
        claimed: set[str] = set()
        n_claims, claim_s = 0, 0.0
        finish = jobs.update().where(jobs.c.id.in_(sa.bindparam("ids", expanding=True))).values(
            status="finished", outcome="succeeded", finished_at=T0, lease_owner=None, lease_expires_at=None)
        while True:
            t = time.perf_counter()
            batch = store.jobs.claim("claimer", limit=args.batch, lease_s=3600, kinds=kinds)
            claim_s += time.perf_counter() - t
            if not batch:
                break
            claimed.update(job["id"] for job in batch)
            n_claims += 1
            with store.engine.begin() as conn:  # the jobs end (untimed): a server holds only what is in flight
                conn.execute(finish, {"ids": [job["id"] for job in batch]})
        check(len(claimed) == queued, f"claimed {len(claimed)} distinct jobs of {queued}")
        made = store.jobs.submit_many([{"kind": "run", "flow": "f", "source": "bulk"} for _ in range(args.batch)])
        held = [job["id"] for job in store.jobs.claim("claimer", limit=args.batch, lease_s=3600)]
        check(sorted(held) == sorted(job["id"] for job, _ in made), "the held jobs")
        renew = timed(lambda: store.jobs.renew("claimer", held, 3600), args.repeat)
        out["claims"] = {
            "jobs": queued, "batch": args.batch, "kinds": args.kinds, "submit_jobs_per_s": args.jobs / submit_s,
            "claim_jobs_per_s": queued / claim_s, "ms_per_claim": claim_s / n_claims * 1e3,
            "ms_per_renew": renew * 1e3, "claim_vs_renew": (claim_s / n_claims) / renew,
            "ms_per_batch_kind_claim": batch_kinds * 1e3,
        }
        check(store.jobs.depth()["bulk"] == {"queued": 0, "running": args.batch}, "depth after the drain")
    return out


@contextmanager
def postgres(spec: str | None) -> Iterator[str | None]:
    """The PostgreSQL URL to use: none, the one given, or a private server's (``auto``)."""
    if spec != "auto":
        yield spec
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from pg import postgres_server, wipe

    with postgres_server() as url:
        wipe(url)
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--kinds", default="document",
                        help="what the drain claims: 'document' (the runner's claim), 'any' (a pick per kind)")
    parser.add_argument("--pg", help="a PostgreSQL URL the benchmark may fill, or 'auto' (tests/pg.py)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp, postgres(args.pg) as pg_url:
        urls = {"sqlite": f"sqlite:///{tmp}/bench.db"}
        if pg_url:
            urls["postgresql"] = pg_url
        for name, url in urls.items():
            log(f"--- {name}")
            r = results["runs"][name] = bench(url, args)
            m, c = r["metrics"], r["claims"]
            log(f"bulk insert of {args.finished:,} finished jobs + deliveries: {r['bulk_insert_s']:.1f} s")
            log(f"depth():   {m['depth_ms_empty']:.2f} ms empty -> {m['depth_ms_finished']:.2f} ms "
                f"with {args.finished:,} finished (x{m['depth_ratio']:.2f})")
            log(f"backlog(): {m['backlog_ms_empty']:.2f} ms empty -> {m['backlog_ms_finished']:.2f} ms "
                f"with {args.finished:,} delivered (x{m['backlog_ratio']:.2f})")
            log(f"full GROUP BY status over jobs: {m['full_count_ms']:.1f} ms (x{m['full_count_vs_depth']:.0f} depth)")
            for what, text in r["plans"].items():
                log(f"plan {what}: {text}")
            log(f"submit_many: {c['submit_jobs_per_s']:,.0f} jobs/s")
            log(f"claim(limit={c['batch']}, kinds={c['kinds']}): {c['claim_jobs_per_s']:,.0f} jobs/s, "
                f"{c['ms_per_claim']:.2f} ms/claim "
                f"(renew of {c['batch']}: {c['ms_per_renew']:.2f} ms; claim/renew x{c['claim_vs_renew']:.2f})")
            log(f"claim of batch kinds (none queued) with {args.jobs:,} documents queued: "
                f"{c['ms_per_batch_kind_claim']:.2f} ms")
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
