"""Server jobs in the store (``store.jobs``) on SQLite and a real PostgreSQL server, no mocks:
idempotent submission, leased claims raced by threads and processes, expiry, renewal,
release, finish with its outbox rows, and the bounded depth query."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from docpipe.store import Store
from docpipe.store.jobs import depth_query, pick_query
from docpipe.store.outbox import backlog_query
from docpipe.store.schema import deliveries, jobs

T0 = 1_700_000_000.0


@pytest.fixture
def store(store_url: str) -> Any:
    with Store(store_url) as opened:
        yield opened


def _queue(store: Store, n: int, **fields: Any) -> list[str]:
    """Submit ``n`` document jobs; their ids in submission order."""
    made = store.jobs.submit_many([{"kind": "document", "flow": "f", "source": "api", "document": f"{i}.pdf",
                                    **fields} for i in range(n)])
    return [job["id"] for job, _ in made]


def test_submit_returns_the_job_and_a_used_key_returns_it_again(store: Store) -> None:
    job, created = store.jobs.submit("document", "invoices", source="api", document="a.pdf", run_id="r1",
                                     payload={"params": {"lang": "de"}}, key="k1", correlation_id="c1", now=T0)
    assert created
    assert job["status"] == "queued" and job["claims"] == 0 and job["created_at"] == T0
    assert job["payload"] == {"params": {"lang": "de"}} and job["run_id"] == "r1"
    assert store.jobs.get(job["id"]) == job
    again, created = store.jobs.submit("document", "invoices", source="api", document="other.pdf", key="k1")
    assert not created and again == job  # the first submission wins, unchanged
    assert store.jobs.by_key("api", "k1") == job
    other, created = store.jobs.submit("document", "invoices", source="watch:/in", key="k1")
    assert created and other["id"] != job["id"]  # keys are per source
    no_key = [store.jobs.submit("run", "invoices", source="api")[0]["id"] for _ in range(2)]
    assert len(set(no_key)) == 2  # a None key never matches
    assert store.jobs.by_key("api", "missing") is None and store.jobs.get("missing") is None


def test_submit_refuses_bad_jobs_with_a_clear_error(store: Store) -> None:
    with pytest.raises(ValueError, match="job kind must be one of document, run, retry, resume, continue"):
        store.jobs.submit("documents", "f", source="api")
    with pytest.raises(ValueError, match="needs the source"):
        store.jobs.submit("document", "f", source="")
    with pytest.raises(ValueError, match="needs the flow"):
        store.jobs.submit("document", "", source="api")
    with pytest.raises(TypeError, match=r"unknown field\(s\) \['path'\]"):
        store.jobs.submit_many([{"kind": "document", "flow": "f", "source": "api", "path": "a.pdf"}])
    assert store.jobs.list() == []


def test_submit_many_is_one_transaction_and_claims_follow_its_order(store: Store) -> None:
    store.jobs.submit("document", "f", source="api", key="old", now=T0)
    made = store.jobs.submit_many([
        {"kind": "document", "flow": "f", "source": "api", "document": "a.pdf", "key": "a"},
        {"kind": "document", "flow": "f", "source": "api", "document": "b.pdf", "key": "old"},
        {"kind": "document", "flow": "f", "source": "api", "document": "c.pdf"},
        {"kind": "document", "flow": "f", "source": "api", "document": "a-again.pdf", "key": "a"},
    ], now=T0 + 1)
    assert [created for _, created in made] == [True, False, True, False]
    assert made[3][0]["id"] == made[0][0]["id"] and made[3][0]["document"] == "a.pdf"
    with pytest.raises(ValueError):  # one bad job: none of the call's jobs are queued
        store.jobs.submit_many([{"kind": "document", "flow": "f", "source": "api", "key": "z"},
                                {"kind": "nope", "flow": "f", "source": "api"}])
    assert store.jobs.by_key("api", "z") is None
    claimed = store.jobs.claim("s1", limit=10, lease_s=60, now=T0 + 2)
    assert [j["document"] for j in claimed] == [None, "a.pdf", "c.pdf"]  # oldest first, then as given


def test_eight_threads_submitting_one_key_make_one_job(store_url: str) -> None:
    barrier = threading.Barrier(8)
    results: list[tuple[str, bool]] = []

    def submit() -> None:
        own = Store(store_url)  # each its own connections, as eight servers would
        try:
            barrier.wait()
            job, created = own.jobs.submit("document", "f", source="api", document="a.pdf", key="same")
            results.append((job["id"], created))
        finally:
            own.close()

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 8
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    with Store(store_url) as store:
        assert len(store.jobs.list()) == 1


def _claim_all(store: Store, owner: str, limit: int) -> list[str]:
    """Claim until the queue is empty; the ids this owner got."""
    got: list[str] = []
    while batch := store.jobs.claim(owner, limit=limit, lease_s=600):
        assert {j["lease_owner"] for j in batch} == {owner} and {j["status"] for j in batch} == {"running"}
        got += [j["id"] for j in batch]
    return got


def test_eight_threads_claim_each_of_200_jobs_once(store_url: str) -> None:
    with Store(store_url) as store:
        ids = _queue(store, 200)
    barrier = threading.Barrier(8)
    got: dict[str, list[str]] = {}

    def claim(owner: str) -> None:
        own = Store(store_url)
        try:
            barrier.wait()
            got[owner] = _claim_all(own, owner, limit=7)
        finally:
            own.close()

    threads = [threading.Thread(target=claim, args=(f"s{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    claimed = [job_id for owner_ids in got.values() for job_id in owner_ids]
    assert len(got) == 8
    assert sorted(claimed) == sorted(ids)  # every job once: none twice, none missed
    with Store(store_url) as store:
        assert store.jobs.depth() == {"api": {"queued": 0, "running": 200}}
        assert {j["claims"] for j in store.jobs.list(limit=1000)} == {1}


def _claim_in_process(url: str, owner: str, out: str, start: Any) -> None:
    store = Store(url)
    start.wait()
    got = _claim_all(store, owner, limit=5)
    store.close()
    Path(out).write_text("\n".join(got))


def test_two_processes_claim_each_of_200_jobs_once(store_url: str, tmp_path: Path) -> None:
    with Store(store_url) as store:
        ids = _queue(store, 200)
    ctx = multiprocessing.get_context("fork")  # two servers: their own processes and stores
    start = ctx.Event()
    procs = [ctx.Process(target=_claim_in_process, args=(store_url, name, str(tmp_path / name), start))
             for name in ("p1", "p2")]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    got = {name: [i for i in (tmp_path / name).read_text().split("\n") if i] for name in ("p1", "p2")}
    assert sorted(got["p1"] + got["p2"]) == sorted(ids)
    with Store(store_url) as store:
        owners = {j["id"]: j["lease_owner"] for j in store.jobs.list(limit=1000)}
    assert all(owners[i] == name for name, mine in got.items() for i in mine)


def test_a_dead_servers_job_is_taken_over_and_its_late_finish_refused(store: Store) -> None:
    [job_id] = _queue(store, 1, run_id="r1")
    [job] = store.jobs.claim("a", limit=4, lease_s=10, now=T0)
    assert job["claims"] == 1 and job["started_at"] == T0 and job["lease_expires_at"] == T0 + 10
    assert store.jobs.claim("b", limit=4, lease_s=10, now=T0 + 9) == []  # a's lease is live
    [taken] = store.jobs.claim("b", limit=4, lease_s=10, now=T0 + 11)
    assert taken["id"] == job_id and taken["claims"] == 2 and taken["lease_owner"] == "b"
    assert not store.jobs.finish(job_id, "a", outcome="succeeded", sinks=["csv"], now=T0 + 12)
    assert store.jobs.renew("a", [job_id], 10, now=T0 + 12) == set()
    assert store.jobs.get(job_id)["status"] == "running" and store.outbox.list() == []
    assert store.jobs.finish(job_id, "b", outcome="failed", error="boom", batch_id="b1", sinks=["csv"], now=T0 + 13)
    done = store.jobs.get(job_id)
    assert (done["status"], done["outcome"], done["error"], done["batch_id"]) == ("finished", "failed", "boom", "b1")
    assert (done["lease_owner"], done["lease_expires_at"], done["finished_at"]) == (None, None, T0 + 13)
    assert [(d["sink"], d["run_id"]) for d in store.outbox.list()] == [("csv", "r1")]


def test_an_expired_lease_nobody_took_may_still_be_finished_by_its_owner(store: Store) -> None:
    [job_id] = _queue(store, 1)
    store.jobs.claim("a", limit=1, lease_s=10, now=T0)
    assert store.jobs.finish(job_id, "a", status="error", error="flow gone", now=T0 + 30)
    assert store.jobs.get(job_id)["status"] == "error"
    assert store.jobs.claim("b", limit=1, lease_s=10, now=T0 + 31) == []


def test_renew_keeps_the_lease(store: Store) -> None:
    job_ids = _queue(store, 2)
    store.jobs.claim("a", limit=2, lease_s=10, now=T0)
    assert store.jobs.renew("a", [*job_ids, "unknown"], 10, now=T0 + 8) == set(job_ids)
    assert store.jobs.claim("b", limit=2, lease_s=10, now=T0 + 15) == []  # renewed to T0 + 18
    assert {j["id"] for j in store.jobs.claim("b", limit=2, lease_s=10, now=T0 + 19)} == set(job_ids)
    assert store.jobs.renew("a", job_ids, 10, now=T0 + 20) == set()


def test_release_puts_jobs_back_in_the_queue(store: Store) -> None:
    job_ids = _queue(store, 3, kind="document")
    store.jobs.claim("a", limit=3, lease_s=60, now=T0)
    assert store.jobs.release("b") == 0  # not b's
    assert store.jobs.release("a", [job_ids[0]]) == 1
    assert store.jobs.depth() == {"api": {"queued": 1, "running": 2}}
    assert store.jobs.release("a") == 2
    back = store.jobs.get(job_ids[1])
    assert (back["status"], back["lease_owner"], back["lease_expires_at"], back["claims"]) == ("queued", None, None, 1)
    assert {j["claims"] for j in store.jobs.claim("b", limit=3, lease_s=60, now=T0 + 1)} == {2}


def test_claim_takes_only_the_kinds_asked_for_oldest_first_across_kinds(store: Store) -> None:
    first, _ = store.jobs.submit("document", "f", source="api", now=T0)
    run_job, _ = store.jobs.submit("run", "f", source="ui", payload={"inputs": ["a.pdf"]}, now=T0 + 1)
    last, _ = store.jobs.submit("document", "f", source="api", now=T0 + 2)
    resume, _ = store.jobs.submit("resume", "f", source="ui", now=T0 + 3)
    claimed = store.jobs.claim("s1", limit=5, lease_s=60, kinds=["run", "resume"], now=T0 + 4)
    assert [j["id"] for j in claimed] == [run_job["id"], resume["id"]]
    store.jobs.release("s1")
    assert [j["id"] for j in store.jobs.claim("s1", limit=3, lease_s=60, now=T0 + 5)] == [
        first["id"], run_job["id"], last["id"]]
    assert [j["id"] for j in store.jobs.claim("s2", limit=3, lease_s=60, kinds="resume", now=T0 + 5)] == [resume["id"]]
    with pytest.raises(ValueError, match="job kinds are document, run, retry, resume, continue, not 'documents'"):
        store.jobs.claim("s1", limit=1, lease_s=60, kinds=["documents"])
    with pytest.raises(ValueError, match="limit must be >= 1"):
        store.jobs.claim("s1", limit=0, lease_s=60)


def test_finish_queues_deliveries_once_in_its_transaction(store: Store) -> None:
    job_ids = _queue(store, 2, run_id="r1")  # a retry job of the same run, say
    store.jobs.claim("a", limit=2, lease_s=60, now=T0)
    assert store.jobs.finish(job_ids[0], "a", outcome="succeeded", sinks=["csv", "hook"], now=T0 + 1)
    assert not store.jobs.finish(job_ids[0], "a", outcome="succeeded", sinks=["csv", "hook"], now=T0 + 2)
    assert store.jobs.finish(job_ids[1], "a", outcome="succeeded", sinks=["csv", "hook", "csv"], now=T0 + 3)
    rows = store.outbox.list()
    assert sorted((d["sink"], d["run_id"], d["status"], d["created_at"]) for d in rows) == [
        ("csv", "r1", "pending", T0 + 1), ("hook", "r1", "pending", T0 + 1)]
    [batch_job] = _queue(store, 1, kind="run")
    store.jobs.claim("a", limit=1, lease_s=60, now=T0 + 4)
    assert store.jobs.finish(batch_job, "a", sinks=["csv"], run_ids=["r1", "r2", "r3"], now=T0 + 5)
    assert store.outbox.backlog() == {"csv": 3, "hook": 1}
    with pytest.raises(ValueError, match="status must be"):
        store.jobs.finish(batch_job, "a", status="queued")


def test_list_filters_and_finished_after(store: Store) -> None:
    first, _ = store.jobs.submit("document", "f", source="api", now=T0)
    second, _ = store.jobs.submit("run", "f", source="ui", batch_id="b1", now=T0 + 1)
    store.jobs.claim("a", limit=2, lease_s=60, now=T0 + 2)
    store.jobs.finish(first["id"], "a", now=T0 + 3)
    assert [j["id"] for j in store.jobs.list()] == [second["id"], first["id"]]
    assert [j["id"] for j in store.jobs.list(status="finished")] == [first["id"]]
    assert [j["id"] for j in store.jobs.list(source="ui", kind="run", batch_id="b1")] == [second["id"]]
    assert [j["id"] for j in store.jobs.list(finished_after=T0 + 2.5)] == [first["id"]]
    assert store.jobs.list(finished_after=T0 + 3) == []
    assert len(store.jobs.list(limit=1)) == 1


def test_depth_counts_only_unfinished_jobs(store: Store) -> None:
    _queue(store, 5)
    store.jobs.submit_many([{"kind": "document", "flow": "f", "source": "watch:/in"} for _ in range(4)])
    running = store.jobs.claim("a", limit=3, lease_s=60)  # the 3 oldest: api's
    for job in running[:2]:
        store.jobs.finish(job["id"], "a")
    assert store.jobs.depth() == {"api": {"queued": 2, "running": 1}, "watch:/in": {"queued": 4, "running": 0}}


def _plan(conn: sa.Connection, query: sa.Select[Any]) -> str:
    """The database's plan for ``query``, as text."""
    sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    prefix = "EXPLAIN" if conn.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN"
    return "\n".join(str(row[-1]) for row in conn.exec_driver_sql(f"{prefix} {sql}"))


def test_depth_and_backlog_read_only_unfinished_rows_through_the_status_indexes(store: Store) -> None:
    """What a /metrics scrape runs must not scan the finished rows: with 20,000 finished jobs
    and delivered deliveries in the tables, both queries go through the status indexes."""
    n = 20_000
    with store.engine.begin() as conn:
        conn.execute(jobs.insert(), [{"id": f"done-{i}", "kind": "document", "flow": "f", "source": "api",
                                      "status": "finished", "claims": 1, "created_at": T0 + i} for i in range(n)])
        conn.execute(deliveries.insert(), [{"sink": "csv", "run_id": f"r{i}", "status": "delivered", "attempts": 1,
                                            "next_attempt_at": T0, "created_at": T0} for i in range(n)])
        conn.exec_driver_sql("ANALYZE")  # the statistics a long-running database has
    _queue(store, 3)
    store.outbox.enqueue(["csv"], ["new-run"])
    with store.engine.connect() as conn:
        dialect = conn.dialect.name
        depth_plan, backlog_plan = _plan(conn, depth_query(dialect)), _plan(conn, backlog_query("pending", dialect))
        claim_plan = _plan(conn, pick_query(dialect, sa.and_(sa.column("status") == "queued",
                                                             sa.column("kind") == "run"), 16))
    for plan, index in ((depth_plan, "ix_jobs_status"), (backlog_plan, "ix_deliveries_status_next"),
                        (claim_plan, "ix_jobs_status")):
        assert index in plan and "Seq Scan" not in plan and "SCAN jobs\n" not in plan + "\n", plan
        assert "SCAN deliveries\n" not in plan + "\n", plan
    assert "TEMP B-TREE FOR ORDER BY" not in claim_plan and "Sort" not in claim_plan  # the index gives the order
    assert store.jobs.depth() == {"api": {"queued": 3, "running": 0}}
    assert store.outbox.backlog() == {"csv": 1}


def test_a_job_is_found_by_its_run_and_a_batch_counted_by_outcome(store: Store) -> None:
    a, _ = store.jobs.submit("document", "f", source="api", document="a.pdf", batch_id="b1", run_id="r1", now=T0)
    store.jobs.submit("document", "f", source="api", document="b.pdf", batch_id="b1", run_id="r2", now=T0 + 1)
    assert store.jobs.by_run("r1")["id"] == a["id"] and store.jobs.by_run("nope") is None
    [first] = store.jobs.claim("s", limit=1, lease_s=30, now=T0 + 2)
    store.jobs.finish(first["id"], "s", outcome="succeeded", now=T0 + 3)
    assert store.jobs.outcomes("b1") == {("finished", "succeeded"): 1, ("queued", None): 1}
    assert store.jobs.outcomes("other") == {}
