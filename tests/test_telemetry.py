"""The server's metrics and probes: counters kept from the records the writer commits,
bounded gauges, and ``/healthz``, ``/readyz``, ``/metrics`` on a real server."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from docpipe.engine import Engine
from docpipe.metrics import exposition
from docpipe.server import create_app
from docpipe.status import Status
from docpipe.store import Store, new_id
from docpipe.store.records import RunFinished, RunStarted, TaskRecord
from docpipe.store.writer import Written
from docpipe.telemetry import IN_FLIGHT, Telemetry

TOKEN = "t0ken-for-the-tests"

#: read (fails an empty document), a flaky step retried once, a review when "maybe" (the
#: others skip it: skipped tasks)
STEPS: list[dict[str, Any]] = [
    {"id": "read", "block": "toy.read"},
    {"id": "flaky", "block": "toy.flaky", "params": {"fail_times": 1},
     "retry": {"max_attempts": 2, "delay": 0, "on": ["ConnectionError"]}},
    {"id": "classify", "expr": "'invoice' if 'invoice' in text else 'letter'", "output": "doc_class"},
    {"id": "check", "review": {"kind": "choose", "key": "doc_class", "choices": ["invoice", "letter"]},
     "when": "'maybe' in text"},
]
TEXTS = ("invoice maybe", "letter for sure", "", "invoice for sure", "letter maybe")


def samples(text: str | bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, by name and labels (it must parse)."""
    if isinstance(text, bytes):
        text = text.decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def of(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> dict[frozenset, float]:
    return {labels: v for (n, labels), v in found.items() if n == name}


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


# --- counters from the records ------------------------------------------------------------

def test_the_fields_telemetry_reads_by_position_are_where_it_reads_them():
    """docpipe.telemetry reads records by position, as the writer does (see its comment)."""
    assert [TaskRecord._fields.index(f) for f in ("block", "status", "started_at", "finished_at", "error_kind")] \
        == [2, 4, 5, 6, 8]
    assert [RunStarted._fields.index(f) for f in ("id", "flow_id")] == [0, 2]
    assert [RunFinished._fields.index(f) for f in ("id", "status")] == [0, 1]


def test_counters_equal_what_the_store_recorded(plan, docs, store_url):
    p = plan(STEPS, outputs=["doc_class"])
    with Store(store_url) as store:
        telemetry = Telemetry(process=False)
        telemetry.attach(store)
        with Engine(store, workers=1) as engine:
            result = engine.run(p, docs(*TEXTS))
        store.writer.flush()
        ours, theirs = samples(telemetry.render()), samples(exposition(store))
        n_reviews = len(store.reviews.tasks())
    assert result.counts["failed"] == 1
    # docpipe.metrics counts every row with aggregate queries: the same figures
    for name in ("docpipe_flow_runs_total", "docpipe_task_runs_total", "docpipe_task_retries_total",
                 "docpipe_task_failures_total", "docpipe_task_duration_seconds_count",
                 "docpipe_task_duration_seconds_bucket"):
        assert of(ours, name) == of(theirs, name), name
    for labels, total in of(theirs, "docpipe_task_duration_seconds_sum").items():
        assert of(ours, "docpipe_task_duration_seconds_sum")[labels] == pytest.approx(total, rel=1e-6, abs=1e-9)
    # and they are what this flow does
    assert value(ours, "docpipe_flow_runs_total", flow="t", status="waiting") == 2
    assert value(ours, "docpipe_flow_runs_total", flow="t", status="succeeded") == 2
    assert value(ours, "docpipe_flow_runs_total", flow="t", status="failed") == 1
    # a waiting run drops its work in flight: flaky ran (and was retried) for the two sure ones
    assert value(ours, "docpipe_task_retries_total", block="toy.flaky") == 2
    assert value(ours, "docpipe_task_failures_total", block="toy.read", error_kind="corrupt") == 1
    assert value(ours, "docpipe_task_runs_total", block="review", status="skipped") == 2
    assert value(ours, "docpipe_review_tasks_created_total") == n_reviews == 2
    assert value(ours, "docpipe_flow_runs_in_flight") == 0
    assert value(ours, "docpipe_store_up") == 1


def _batch(store: Store) -> tuple[int, str]:
    flow_id = store.put_flow("elsewhere", "1", "h", {"name": "elsewhere", "version": "1", "steps": []})
    return flow_id, store.start_batch(flow_id, {}, 0)


def test_a_run_started_before_the_server_is_counted_under_its_flow(tmp_path):
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        flow_id, batch_id = _batch(store)
        run_id = new_id()
        store.writer.flow_run_started(RunStarted(run_id, batch_id, flow_id, "a.txt", time.time()))
        store.writer.flush()  # written before anything observes: an earlier server's run
        telemetry = Telemetry(process=False)
        telemetry.attach(store)
        store.writer.flow_run_finished(RunFinished(run_id, Status.SUCCEEDED, time.time()))
        store.writer.flush()
        found = samples(telemetry.render())
    assert value(found, "docpipe_flow_runs_total", flow="elsewhere", status="succeeded") == 1


def test_only_committed_records_are_counted_and_a_broken_observer_is_logged(tmp_path, caplog):
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        telemetry = Telemetry(process=False)
        telemetry.attach(store)
        seen: list[Written] = []

        def broken(written: Written) -> None:
            seen.append(written)
            raise RuntimeError("observer bug")

        store.writer.observe(broken)
        now = time.time()
        # a task run of no run: NOT NULL refuses it, the round is rolled back and not counted
        store.writer.task_run(TaskRecord(None, "s", "toy.read", 1, Status.SUCCEEDED, now, now, None))  # type: ignore[arg-type]
        with pytest.raises(sa.exc.IntegrityError):
            store.writer.flush()
        assert seen == []
        with caplog.at_level(logging.ERROR, logger="docpipe.store.writer"):
            store.writer.task_run(TaskRecord("r1", "s", "toy.read", 1, Status.SUCCEEDED, now, now + 0.02, None))
            store.writer.flush()  # the observer's error is logged, not the writer's
        assert "observer bug" in caplog.text
        assert [len(w.tasks) for w in seen] == [1]
        store.writer.unobserve(broken)
        store.writer.task_run(TaskRecord("r2", "s", "toy.read", 1, Status.FAILED, now, now + 2, None, "corrupt"))
        store.writer.flush()
        found = samples(telemetry.render())
        with store.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT count(*) FROM task_runs")).scalar_one()
    assert len(seen) == 1
    assert rows == 2
    assert value(found, "docpipe_task_runs_total", block="toy.read", status="succeeded") == 1
    assert value(found, "docpipe_task_failures_total", block="toy.read", error_kind="corrupt") == 1
    assert value(found, "docpipe_task_duration_seconds_bucket", block="toy.read", le="0.05") == 1
    assert value(found, "docpipe_task_duration_seconds_bucket", block="toy.read", le="1.0") == 1
    assert value(found, "docpipe_task_duration_seconds_bucket", block="toy.read", le="5.0") == 2
    assert value(found, "docpipe_task_duration_seconds_count", block="toy.read") == 2


def test_gauges_from_callbacks_and_the_runner(tmp_path):
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        telemetry = Telemetry(process=False)
        telemetry.attach(store)
        flow_id, batch_id = _batch(store)
        store.writer.flow_run_started(RunStarted(new_id(), batch_id, flow_id, "a.txt", time.time()))
        store.writer.flush()
        telemetry.pools(lambda: [{"block": "ocr", "workers": 2, "busy": 1}, {"block": "ocr", "workers": 1, "busy": 1},
                                 {"block": "text.language", "workers": 4, "busy": 0}])
        telemetry.sources(lambda: [{"name": "watch:/in", "seen": 12, "queued": 3, "running": True,
                                    "folder": "/in"}])
        telemetry.lease_expired(2)
        telemetry.lease_expired()
        with pytest.raises(ValueError, match="n must be >= 0"):
            telemetry.lease_expired(-1)
        found = samples(telemetry.render())
    assert value(found, "docpipe_flow_runs_in_flight") == 1
    assert value(found, "docpipe_pool_workers", block="ocr") == 3
    assert value(found, "docpipe_pool_busy", block="ocr") == 2
    assert value(found, "docpipe_pool_workers", block="text.language") == 4
    assert value(found, "docpipe_source_seen", source="watch:/in") == 12
    assert value(found, "docpipe_source_running", source="watch:/in") == 1
    assert not of(found, "docpipe_source_folder")
    assert value(found, "docpipe_lease_expiries_total") == 3


def test_runs_in_flight_are_counted_through_the_status_index(store_url):
    with Store(store_url) as store:
        sql = str(IN_FLIGHT.compile(store.engine, compile_kwargs={"literal_binds": True}))
        with store.engine.connect() as conn:
            if store.engine.dialect.name == "sqlite":
                plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
                assert "USING COVERING INDEX ix_flow_runs_status" in plan, plan
            else:  # a small table is read whole; the question is whether the index can serve it
                conn.exec_driver_sql("SET enable_seqscan = off")
                plan = " ".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {sql}"))
                assert "ix_flow_runs_status" in plan and "Seq Scan" not in plan, plan


# --- the server ---------------------------------------------------------------------------

@contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` under uvicorn on a free loopback port (in this process), until the block ends."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def test_server_answers_probes_and_metrics_of_what_it_ran(tmp_path, plan, docs):
    app = create_app(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "data", TOKEN)
    ctx = app.state.ctx
    pools_up = threading.Event()
    ctx.telemetry.readiness(lambda: None if pools_up.is_set() else "pools starting: toy.flaky")
    with serving(app) as base:
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        waiting = httpx.get(f"{base}/readyz")
        assert waiting.status_code == 503
        assert waiting.json() == {"status": "unavailable", "reason": "pools starting: toy.flaky"}
        pools_up.set()
        assert httpx.get(f"{base}/readyz").json() == {"status": "ready"}
        with Engine(ctx.store, workers=1) as engine:  # what the server's runner does: its store, attached
            engine.run(plan(STEPS), docs(*TEXTS))
        ctx.store.writer.flush()
        scraped = httpx.get(f"{base}/metrics")
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
        found = samples(scraped.text)
        recorded = samples(exposition(ctx.store))
    assert of(found, "docpipe_task_runs_total") == of(recorded, "docpipe_task_runs_total")
    assert value(found, "docpipe_flow_runs_total", flow="t", status="failed") == 1
    assert value(found, "process_resident_memory_bytes") > 0


def test_an_exposed_server_guards_metrics_but_not_the_probes(tmp_path):
    app = create_app(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "data", TOKEN, reads_public=False)
    with serving(app) as base:
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 200
        assert httpx.get(f"{base}/metrics").status_code == 401
        assert httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
        ok = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and "docpipe_store_up 1.0" in ok.text


def test_readyz_is_503_while_the_database_is_down(tmp_path):
    """A private PostgreSQL server, stopped under the running server and started again."""
    from pg import _run, find_bindir, postgres_server

    with postgres_server() as url:
        app = create_app(url, tmp_path / "data", TOKEN)
        with serving(app) as base:
            assert httpx.get(f"{base}/readyz").status_code == 200
            engine = sa.create_engine(url)
            with engine.connect() as conn:
                data = conn.exec_driver_sql("SHOW data_directory").scalar_one()
                port = conn.exec_driver_sql("SHOW port").scalar_one()
            engine.dispose()
            pg_ctl = str(find_bindir() / "pg_ctl")  # type: ignore[operator]
            _run([pg_ctl, "-D", data, "-m", "fast", "-w", "stop"], "pg_ctl stop")
            try:
                down = httpx.get(f"{base}/readyz", timeout=10)
                assert down.status_code == 503
                assert down.json()["reason"].startswith("the store did not answer SELECT 1: OperationalError")
                assert httpx.get(f"{base}/healthz").status_code == 200  # alive, not ready
                scraped = httpx.get(f"{base}/metrics", timeout=10)
                assert scraped.status_code == 200 and "docpipe_store_up 0.0" in scraped.text
            finally:
                options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {Path(data).parent} -c fsync=off "
                           "-c max_connections=50")
                _run([pg_ctl, "-D", data, "-l", str(Path(data).parent / "server.log"), "-w", "-t", "60",
                      "-o", options, "start"], "pg_ctl start", timeout=90)
            assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200


def _server_pids(data: str) -> list[int]:
    """The PostgreSQL server's postmaster (from its pid file) and every process it started."""
    postmaster = int(Path(data, "postmaster.pid").read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(entry.name))
    return [postmaster, *children]


def _signal(pids: list[int], sig: int) -> None:
    """Send ``sig`` to each of ``pids``; one that ended since it was listed (a backend whose
    connection closed, an autovacuum worker) is skipped: it holds nothing to freeze."""
    import os

    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def test_readyz_gives_up_on_a_hung_database_after_two_seconds(tmp_path):
    """A private PostgreSQL server frozen (SIGSTOP) under the running server: /readyz answers
    503 after its 2 s, the next one at once while that ping still waits; a scrape waits, the
    next answers at once with the store down; thawed, both complete and /readyz is 200."""
    import signal

    from pg import postgres_server

    with postgres_server() as url:
        app = create_app(url, tmp_path / "data", TOKEN)
        with serving(app) as base:
            assert httpx.get(f"{base}/readyz").status_code == 200
            engine = sa.create_engine(url)
            with engine.connect() as conn:
                data = conn.exec_driver_sql("SHOW data_directory").scalar_one()
            engine.dispose()
            pids = _server_pids(data)
            _signal(pids, signal.SIGSTOP)
            try:
                hung = httpx.get(f"{base}/readyz", timeout=30)
                assert hung.status_code == 503
                assert hung.json()["reason"] == "the store did not answer SELECT 1 within 2 s"
                again = httpx.get(f"{base}/readyz", timeout=30)  # the first ping still waits: no second thread
                assert again.status_code == 503
                assert again.json()["reason"] == "the store has not answered SELECT 1 for over 2 s"
                assert httpx.get(f"{base}/healthz").status_code == 200
                # a scrape waits on the frozen store; the next one answers at once, store down
                first: list[httpx.Response] = []
                waiting = threading.Thread(target=lambda: first.append(httpx.get(f"{base}/metrics", timeout=60)))
                waiting.start()
                deadline = time.monotonic() + 10
                while not app.state.ctx.telemetry._gauge_lock.locked():
                    assert time.monotonic() < deadline, "the first scrape never reached the store"
                    time.sleep(0.05)
                second = httpx.get(f"{base}/metrics", timeout=10)
                assert second.status_code == 200 and "docpipe_store_up 0.0" in second.text
            finally:
                _signal(pids, signal.SIGCONT)
            waiting.join(60)
            assert first[0].status_code == 200 and "docpipe_store_up 1.0" in first[0].text
            deadline = time.monotonic() + 30
            while (ready := httpx.get(f"{base}/readyz", timeout=30)).status_code != 200:
                assert time.monotonic() < deadline, ready.json()
                time.sleep(0.2)
