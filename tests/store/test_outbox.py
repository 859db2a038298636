"""The outbox (``store.outbox``) on SQLite and a real PostgreSQL server, no mocks: deliveries
made once, leased to one dispatcher at a time (threads and processes racing), retried, given
up, revived, and the backlog counting only what is pending."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest

from docpipe.store import Store

T0 = 1_700_000_000.0


@pytest.fixture
def store(store_url: str) -> Any:
    with Store(store_url) as opened:
        yield opened


def test_enqueue_makes_each_sink_and_run_once(store: Store) -> None:
    assert store.outbox.enqueue(["csv", "hook"], ["r1", "r2"], now=T0) == 4
    assert store.outbox.enqueue(["csv", "csv"], ["r1", "r3", "r3"], now=T0 + 1) == 1
    assert store.outbox.enqueue([], ["r9"]) == 0
    assert store.outbox.backlog() == {"csv": 3, "hook": 2}
    [row] = store.outbox.list(sink="csv", run_id="r3")
    assert (row["status"], row["attempts"], row["next_attempt_at"], row["lease_owner"]) == ("pending", 0, T0 + 1, None)
    assert store.outbox.get(row["id"]) == row and store.outbox.get(-1) is None


def test_a_run_that_ends_anew_is_delivered_again(store: Store) -> None:
    """A failed run delivered, then retried by a batch job: ``finish(..., again=True)`` makes its
    delivery pending again (a pending one stays as it is); without ``again`` nothing changes."""
    job, _ = store.jobs.submit("retry", "f", source="ui", batch_id="b1")
    store.outbox.enqueue(["hook"], ["r1", "r2"], now=T0)
    [d1, d2] = sorted(store.outbox.claim("d", limit=2, lease_s=30, now=T0 + 1), key=lambda d: d["run_id"])
    store.outbox.delivered([d1["id"]], "d", now=T0 + 2)
    store.outbox.failed(d2["id"], "d", "504", T0 + 60)  # still pending, retried later
    [claimed] = store.jobs.claim("s", limit=1, lease_s=30, now=T0 + 3)
    assert store.jobs.finish(claimed["id"], "s", outcome="succeeded", sinks=["hook"], run_ids=["r1", "r2"],
                             now=T0 + 4, again=True)
    rows = {d["run_id"]: d for d in store.outbox.list(sink="hook")}
    assert (rows["r1"]["status"], rows["r1"]["attempts"], rows["r1"]["delivered_at"]) == ("pending", 0, None)
    assert (rows["r2"]["status"], rows["r2"]["attempts"], rows["r2"]["next_attempt_at"]) == ("pending", 1, T0 + 60)
    assert store.outbox.backlog() == {"hook": 2}
    store.outbox.delivered([rows["r1"]["id"]], "d", now=T0 + 5)
    assert store.outbox.enqueue(["hook"], ["r1"], now=T0 + 6) == 0  # not again: it stays delivered
    assert store.outbox.get(rows["r1"]["id"])["status"] == "delivered"


def test_a_claimed_delivery_is_held_until_its_lease_expires(store: Store) -> None:
    store.outbox.enqueue(["csv", "hook"], ["r1", "r2"], now=T0)
    mine = store.outbox.claim("d1", limit=3, lease_s=30, sinks=["csv", "hook"], now=T0 + 1)
    assert len(mine) == 3 and {d["lease_owner"] for d in mine} == {"d1"}
    assert {d["lease_expires_at"] for d in mine} == {T0 + 31}
    [rest] = store.outbox.claim("d2", limit=10, lease_s=30, now=T0 + 2)
    assert rest["id"] not in {d["id"] for d in mine}
    assert store.outbox.claim("d2", limit=10, lease_s=30, now=T0 + 30) == []
    again = store.outbox.claim("d2", limit=10, lease_s=30, now=T0 + 32)  # d1 died: its leases ran out
    assert {d["id"] for d in again} == {d["id"] for d in mine}
    assert [d["sink"] for d in store.outbox.claim("d3", limit=10, lease_s=30, sinks=["csv"], now=T0 + 90)] == [
        "csv", "csv"]
    with pytest.raises(ValueError, match="lease_s > 0"):
        store.outbox.claim("d1", limit=1, lease_s=0)


def test_a_failed_delivery_is_retried_when_due_then_given_up_then_revived(store: Store) -> None:
    store.outbox.enqueue(["hook"], ["r1"], now=T0)
    [d] = store.outbox.claim("d1", limit=1, lease_s=30, now=T0)
    assert not store.outbox.failed(d["id"], "d2", "not mine", T0 + 60, now=T0 + 1)  # d1's live lease
    assert store.outbox.failed(d["id"], "d1", "HTTP 503", next_attempt_at=T0 + 60, now=T0 + 1)
    row = store.outbox.get(d["id"])
    assert (row["status"], row["attempts"], row["last_error"], row["lease_owner"]) == ("pending", 1, "HTTP 503", None)
    assert store.outbox.claim("d1", limit=1, lease_s=30, now=T0 + 59) == []  # not due yet
    assert store.outbox.backlog() == {"hook": 1}  # still owed
    [d] = store.outbox.claim("d1", limit=1, lease_s=30, now=T0 + 60)
    assert store.outbox.failed(d["id"], "d1", "HTTP 410", next_attempt_at=None, now=T0 + 61)
    dead = store.outbox.get(d["id"])
    assert (dead["status"], dead["attempts"], dead["last_error"]) == ("dead", 2, "HTTP 410")
    assert store.outbox.claim("d1", limit=1, lease_s=30, now=T0 + 1000) == []
    assert not store.outbox.failed(d["id"], "d1", "again", None)  # dead: nothing to fail
    assert store.outbox.backlog() == {} and store.outbox.backlog("dead") == {"hook": 1}
    assert store.outbox.retry_dead("csv") == 0
    assert store.outbox.retry_dead("hook", now=T0 + 2000) == 1
    revived = store.outbox.get(d["id"])
    assert (revived["status"], revived["attempts"], revived["next_attempt_at"]) == ("pending", 0, T0 + 2000)
    assert revived["last_error"] == "HTTP 410"
    [d] = store.outbox.claim("d1", limit=1, lease_s=30, now=T0 + 2000)
    assert store.outbox.delivered([d["id"]], "d1", now=T0 + 2001) == 1
    assert store.outbox.delivered([d["id"]], "d1") == 0  # recorded once
    done = store.outbox.get(d["id"])
    assert (done["status"], done["delivered_at"], done["lease_owner"]) == ("delivered", T0 + 2001, None)
    assert store.outbox.backlog() == {} and store.outbox.list(status="delivered") == [done]
    with pytest.raises(ValueError):
        store.outbox.backlog("gone")


def test_a_send_finished_after_the_lease_ran_out_is_still_recorded(store: Store) -> None:
    store.outbox.enqueue(["hook"], ["r1"], now=T0)
    [d] = store.outbox.claim("slow", limit=1, lease_s=10, now=T0)
    [same] = store.outbox.claim("other", limit=1, lease_s=10, now=T0 + 11)
    assert same["id"] == d["id"]
    assert store.outbox.delivered([d["id"]], "slow", now=T0 + 12) == 1  # the receiver has it
    assert store.outbox.claim("other", limit=1, lease_s=10, now=T0 + 30) == []
    assert not store.outbox.failed(d["id"], "other", "late failure", T0 + 60, now=T0 + 13)
    assert store.outbox.get(d["id"])["status"] == "delivered"


def test_backlog_counts_only_pending_deliveries(store: Store) -> None:
    store.outbox.enqueue(["csv", "hook", "table"], [f"r{i}" for i in range(10)], now=T0)
    claimed = store.outbox.claim("d1", limit=30, lease_s=30, now=T0)
    by_sink: dict[str, list[int]] = {}
    for d in claimed:
        by_sink.setdefault(d["sink"], []).append(d["id"])
    store.outbox.delivered(by_sink["csv"], "d1", now=T0 + 1)
    store.outbox.delivered(by_sink["hook"][:4], "d1", now=T0 + 1)
    for delivery_id in by_sink["table"][:3]:
        store.outbox.failed(delivery_id, "d1", "table locked", None, now=T0 + 1)
    assert store.outbox.backlog() == {"hook": 6, "table": 7}
    assert store.outbox.backlog("dead") == {"table": 3}
    assert store.outbox.backlog("delivered") == {"csv": 10, "hook": 4}


def _drain(store: Store, owner: str) -> list[int]:
    """Claim and deliver until nothing is due; the ids this dispatcher delivered."""
    sent: list[int] = []
    while batch := store.outbox.claim(owner, limit=9, lease_s=600):
        ids = [d["id"] for d in batch]
        assert store.outbox.delivered(ids, owner) == len(ids)
        sent += ids
    return sent


def test_eight_dispatcher_threads_deliver_each_of_200_once(store_url: str) -> None:
    with Store(store_url) as store:
        assert store.outbox.enqueue(["csv", "hook"], [f"r{i}" for i in range(100)]) == 200
    barrier = threading.Barrier(8)
    sent: dict[str, list[int]] = {}

    def dispatch(owner: str) -> None:
        own = Store(store_url)
        try:
            barrier.wait()
            sent[owner] = _drain(own, owner)
        finally:
            own.close()

    threads = [threading.Thread(target=dispatch, args=(f"d{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    delivered = [i for ids in sent.values() for i in ids]
    assert len(sent) == 8 and len(delivered) == 200 and len(set(delivered)) == 200
    with Store(store_url) as store:
        assert store.outbox.backlog() == {} and store.outbox.backlog("delivered") == {"csv": 100, "hook": 100}


def _drain_in_process(url: str, owner: str, out: str, start: Any) -> None:
    store = Store(url)
    start.wait()
    sent = _drain(store, owner)
    store.close()
    Path(out).write_text("\n".join(map(str, sent)))


def test_two_dispatcher_processes_deliver_each_of_200_once(store_url: str, tmp_path: Path) -> None:
    with Store(store_url) as store:
        store.outbox.enqueue(["csv", "hook"], [f"r{i}" for i in range(100)])
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_drain_in_process, args=(store_url, name, str(tmp_path / name), start))
             for name in ("p1", "p2")]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    sent = [int(i) for name in ("p1", "p2") for i in (tmp_path / name).read_text().split("\n") if i]
    assert len(sent) == 200 and len(set(sent)) == 200
