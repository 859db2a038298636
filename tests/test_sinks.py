"""Output sinks and the outbox dispatcher, over real finished runs, a real HTTP receiver,
real files and tables on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import docpipe
from docpipe.engine import Engine
from docpipe.plugins import Registry
from docpipe.sinks import (
    BUILTIN_SINKS,
    CsvSink,
    JsonlSink,
    Sink,
    SinkError,
    SqlSink,
    Undeliverable,
    make_sinks,
    parse_sink,
)
from docpipe.sinks.dispatch import Dispatcher
from docpipe.sinks.records import run_records
from docpipe.store import Store

# --- finished runs --------------------------------------------------------------------------


@pytest.fixture
def finished(plan, docs, tmp_path) -> Callable[..., list[str]]:
    """Run a small real flow over ``texts`` on ``store`` and return the run ids, in order
    (an empty text fails its run as ``corrupt``)."""

    def run(store: Store, *texts: str) -> list[str]:
        p = plan([{"id": "read", "block": "toy.read"}, {"id": "up", "block": "toy.upper"},
                  {"id": "words", "block": "toy.words"}], outputs=["upper", "words", "lines"])
        with Engine(store, workers=1, work_dir=tmp_path / "work") as engine:
            result = engine.run(p, docs(*texts))
        return [r.run_id for r in result.results]

    return run


@pytest.fixture
def sqlite_store(tmp_path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        yield store


def delivery_statuses(store: Store, sink: str) -> dict[str, str]:
    return {d["run_id"]: d["status"] for d in store.outbox.list(sink=sink, limit=1000)}


# --- a real HTTP receiver ---------------------------------------------------------------------


class Receiver:
    """A webhook receiver on 127.0.0.1: answers 503 to the first ``fail_first`` posts and
    ``refuse`` (a status) to records whose document contains ``refuse_word``, 200 otherwise.
    Keeps every post and the keys it accepted (with 2xx), as a receiver deduping on
    ``Idempotency-Key`` would."""

    def __init__(self, port: int = 0, fail_first: int = 0, refuse: int = 422, refuse_word: str = "refused") -> None:
        self.fail_first, self.refuse, self.refuse_word = fail_first, refuse, refuse_word
        self.posts: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.accepted: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    receiver.posts.append((dict(self.headers), body))
                    if len(receiver.posts) <= receiver.fail_first:
                        status = 503
                    elif receiver.refuse_word in body["document"]:
                        status = receiver.refuse
                    else:
                        status = 200
                        receiver.accepted.append(self.headers["Idempotency-Key"])
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no" if status >= 300 else b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def receiver(**kwargs: Any) -> Iterator[Receiver]:
    r = Receiver(**kwargs)
    try:
        yield r
    finally:
        r.close()


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    """Wait until ``condition()`` holds (failing the test after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.02)


def free_port() -> int:
    """A port nothing listens on (bound and closed again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- configuration ----------------------------------------------------------------------------


def test_sink_texts_parse_into_name_kind_and_spec():
    assert parse_sink("results=jsonl:/srv/out/results.jsonl") == ("results", "jsonl", "/srv/out/results.jsonl")
    assert parse_sink("crm=sql:postgresql+psycopg://u@h/db#docpipe_results") == (
        "crm", "sql", "postgresql+psycopg://u@h/db#docpipe_results")
    assert parse_sink("hook=webhook:https://host/path") == ("hook", "webhook", "https://host/path")
    assert parse_sink("hook=https://host/path") == ("hook", "webhook", "https://host/path")
    assert parse_sink("out=/srv/out/results.csv") == ("out", "csv", "/srv/out/results.csv")
    for bad in ("results", "=jsonl:/x", "results=", "results=/srv/out/results.txt", "a b=jsonl:/x"):
        with pytest.raises(SinkError, match="NAME=KIND:SPEC|no kind"):
            parse_sink(bad)


def test_an_unknown_kind_or_a_bad_target_is_a_clear_error(tmp_path):
    known = r"known kinds: csv, jsonl, sql, webhook\)"
    with pytest.raises(SinkError, match=r"sink 'x': unknown sink kind 'kafka' \(" + known):
        make_sinks(["x=kafka:broker:9092"])
    with pytest.raises(SinkError, match="configured twice"):
        make_sinks([f"a=jsonl:{tmp_path}/a.jsonl", f"a=csv:{tmp_path}/a.csv"])
    with pytest.raises(SinkError, match="needs an http:// or https:// URL"):
        make_sinks(["h=webhook:ftp://host/x"])
    with pytest.raises(SinkError, match="is not a database URL"):
        make_sinks(["t=sql:nosuchdb://h/x"])
    with pytest.raises(SinkError, match="not a plain SQL name"):
        make_sinks(["t=sql:sqlite:///x.db#results; drop table x"])
    with pytest.raises(SinkError, match="DOCPIPE_TEST_NO_SUCH_TOKEN .* is not set"):
        make_sinks([{"name": "h", "kind": "webhook", "url": "https://h/x",
                     "authorization_env": "DOCPIPE_TEST_NO_SUCH_TOKEN"}])
    with pytest.raises(SinkError, match="option 'timeout' must be int or float"):
        make_sinks([{"name": "h", "kind": "webhook", "url": "https://h/x", "timeout": "soon"}])
    foreign = tmp_path / "old.csv"
    foreign.write_text("document,status\na.pdf,succeeded\n")
    with pytest.raises(SinkError, match="exists and is not a docpipe csv sink file"):
        make_sinks([f"old=csv:{foreign}"])
    with pytest.raises(SinkError, match="backoff must be one or more delays"):
        Dispatcher(None, {}, owner="x", backoff=())
    tables = make_sinks([{"name": "t", "kind": "sql", "spec": f"sqlite:///{tmp_path}/t.db", "table": "out"},
                         f"j=jsonl:{tmp_path}/j.jsonl"])
    assert isinstance(tables["t"], SqlSink) and tables["t"].table.name == "out"
    assert isinstance(tables["j"], JsonlSink)


# --- a third party's sink through the hook ------------------------------------------------------


class ListSink(Sink):
    """A third party's sink: keeps records in a list shared by name; refuses (for good) a
    document whose path contains 'refused'."""

    kind = "memory"
    boxes: dict[str, list[dict[str, Any]]] = {}

    def deliver(self, records: list[dict[str, Any]]) -> list[str | None]:
        box = self.boxes.setdefault(self.spec, [])
        out: list[str | None] = []
        for r in records:
            if "refused" in r["document"]:
                out.append(Undeliverable("memory sink refuses this one"))
            else:
                box.append(r)
                out.append(None)
        return out


class ShadowCsv(Sink):
    kind = "csv"


class SinkPlugin:
    """A plugin object, loaded the way ``--plugin`` loads a module."""

    @docpipe.hookimpl
    def register_sinks(self, register: Callable[[type], None]) -> None:
        register(ListSink)
        register(ShadowCsv)


def test_a_plugin_sink_is_found_by_kind_and_cannot_shadow_a_builtin(sqlite_store, finished, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv("DOCPIPE_DISABLE_PLUGINS", "*")  # the built-ins need no entry point
    registry = Registry(extra=[SinkPlugin()])
    sinks = make_sinks(["mem=memory:box1", f"out=csv:{tmp_path}/out.csv"], registry)
    assert type(sinks["mem"]) is ListSink
    assert type(sinks["out"]) is CsvSink  # the built-in, not the plugin's
    with pytest.raises(SinkError, match=r"known kinds: csv, jsonl, memory, sql, webhook\); plugin '.*': "
                                        r"register_sinks: kind 'csv' is built into docpipe"):
        make_sinks(["x=kafka:b"], registry)
    with pytest.raises(SinkError, match="unknown sink kind 'memory'"):
        make_sinks(["mem=memory:box1"], Registry(entry_points=False))  # not loaded: not known

    ids = finished(sqlite_store, "alpha", "beta", "gamma")
    sqlite_store.outbox.enqueue(["mem"], ids)
    dispatcher = Dispatcher(sqlite_store, {"mem": sinks["mem"]}, owner="t", backoff=(0.01,))
    assert dispatcher.drain(10)
    assert [r["run_id"] for r in ListSink.boxes["box1"]] == ids
    assert set(delivery_statuses(sqlite_store, "mem").values()) == {"delivered"}
    assert set(BUILTIN_SINKS) == {"csv", "jsonl", "sql", "webhook"}


def test_an_undeliverable_record_is_dead_at_once_and_the_rest_delivered(sqlite_store, finished, tmp_path):
    ids = finished(sqlite_store, "one", "two")
    refused = tmp_path / "refused.txt"
    refused.write_text("refused text")
    sqlite_store.outbox.enqueue(["mem"], ids)
    # a delivery for a run the store does not have: retried, then given up
    sqlite_store.outbox.enqueue(["mem"], ["0" * 32])
    sink = ListSink("mem", "box2", {})
    records = run_records(sqlite_store, ids)
    assert set(records) == set(ids)
    assert records[ids[0]]["outputs"] == {"upper": "ONE", "words": 1, "lines": ["one"]}
    assert records[ids[0]]["flow"] == "t" and records[ids[0]]["status"] == "succeeded"
    # make one record refused: its document is the refused file
    with sqlite_store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE flow_runs SET document = ? WHERE id = ?", (str(refused), ids[1]))
    dispatcher = Dispatcher(sqlite_store, {"mem": sink}, owner="t", backoff=(0.01,), max_attempts=3)
    assert dispatcher.drain(10)
    rows = {d["run_id"]: d for d in sqlite_store.outbox.list(sink="mem")}
    assert rows[ids[0]]["status"] == "delivered"
    assert rows[ids[1]]["status"] == "dead" and rows[ids[1]]["attempts"] == 1
    assert rows[ids[1]]["last_error"] == "memory sink refuses this one"
    assert rows["0" * 32]["status"] == "dead" and rows["0" * 32]["attempts"] == 3
    assert "is not recorded finished in the store" in rows["0" * 32]["last_error"]
    assert dispatcher.counts["mem"] == {"delivered": 1, "failed": 2, "dead": 2}
    assert sqlite_store.outbox.retry_dead("mem") == 2  # dead ones go again only when asked


# --- file sinks -----------------------------------------------------------------------------------


def file_lines(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_file_sink_writes_each_run_once_across_retries_restarts_and_a_torn_line(sqlite_store, finished,
                                                                                  tmp_path, kind):
    ids = finished(sqlite_store, "hello world", "", "a b c")
    records = run_records(sqlite_store, ids)
    path = tmp_path / "out" / f"results.{kind}"
    sink = make_sinks([f"out={kind}:{path}"])["out"]
    assert sink.deliver([records[ids[0]], records[ids[1]]]) == [None, None]
    # a crash between the append and `delivered`: the same records come again, with a new one
    assert sink.deliver([records[i] for i in ids]) == [None] * 3
    sink.close()
    # a restarted server's sink reads the file's run ids when it opens it
    again = make_sinks([f"out={kind}:{path}"])["out"]
    assert again.deliver([records[ids[2]], records[ids[0]]]) == [None, None]
    rows = file_lines(path)
    assert [r["run_id"] for r in rows] == ids
    by_id = {r["run_id"]: r for r in rows}
    ok, bad = by_id[ids[0]], by_id[ids[1]]
    assert ok["status"] == "succeeded" and ok["upper"] == "HELLO WORLD" and ok["flow"] == "t"
    assert bad["status"] == "failed" and bad["error_kind"] == "corrupt" and bad["failed_step"] == "read"
    if kind == "csv":
        assert path.read_text().count("run_id,") == 1  # the header once
        assert ok["words"] == "2" and json.loads(ok["lines"]) == ["hello world"] and bad["upper"] == ""
    else:
        assert ok["words"] == 2 and ok["lines"] == ["hello world"] and "upper" not in bad

    # a crash in the middle of a write leaves a torn line: cut off, and the run written whole
    data = path.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[: last + 20])
    again.close()
    third = make_sinks([f"out={kind}:{path}"])["out"]
    assert third.deliver([records[i] for i in ids]) == [None] * 3
    assert [r["run_id"] for r in file_lines(path)] == ids
    # a file moved away (log rotation) is noticed: the next run goes to a new file
    path.rename(path.with_suffix(".old"))
    more = finished(sqlite_store, "later")
    third.deliver(list(run_records(sqlite_store, more).values()))
    assert [r["run_id"] for r in file_lines(path)] == more
    third.close()


def test_a_crash_between_write_and_delivered_still_gives_one_line_per_run(sqlite_store, finished, tmp_path):
    ids = finished(sqlite_store, "one", "two", "three")
    path = tmp_path / "results.jsonl"
    sqlite_store.outbox.enqueue(["out"], ids)
    # a server claims the deliveries, appends them, and dies before recording them delivered
    claimed = sqlite_store.outbox.claim("dead-server", limit=10, lease_s=0.01)
    assert [d["run_id"] for d in claimed] == ids
    dying = JsonlSink("out", str(path), {})
    records = run_records(sqlite_store, ids)
    dying.deliver([records[i] for i in ids])
    dying.close()
    # another server (or the restarted one) takes them over once the lease has run out
    dispatcher = Dispatcher(sqlite_store, make_sinks([f"out=jsonl:{path}"]), owner="server-2", backoff=(0.01,))
    assert dispatcher.drain(10)
    assert [r["run_id"] for r in file_lines(path)] == ids
    assert set(delivery_statuses(sqlite_store, "out").values()) == {"delivered"}
    dispatcher.stop()


# --- the SQL sink ---------------------------------------------------------------------------------


def check_sql_sink(url: str, spec: str, sqlite_store: Store, finished: Callable[..., list[str]],
                   table: str) -> None:
    ids = finished(sqlite_store, "hello world", "", "x y")
    records = run_records(sqlite_store, ids)
    sink = make_sinks([f"crm=sql:{spec}"])["crm"]
    assert sink.deliver([records[i] for i in ids[:2]]) == [None, None]
    # a retry of the same runs with a changed status, and a new run: one row per run
    changed = dict(records[ids[1]], status="succeeded", error_kind=None, error=None)
    assert sink.deliver([changed, records[ids[2]], records[ids[0]]]) == [None] * 3
    sink.close()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = {r.run_id: r for r in conn.execute(sa.text(f"SELECT * FROM {table}"))}
    finally:
        engine.dispose()
    assert set(rows) == set(ids)
    assert rows[ids[1]].status == "succeeded" and rows[ids[1]].error_kind is None
    assert json.loads(rows[ids[0]].outputs) == {"upper": "HELLO WORLD", "words": 2, "lines": ["hello world"]}
    assert rows[ids[2]].flow == "t" and rows[ids[2]].batch_id == records[ids[2]]["batch_id"]
    assert rows[ids[0]].finished_at == pytest.approx(records[ids[0]]["finished_at"])


def test_the_sql_sink_upserts_by_run_id_on_sqlite(sqlite_store, finished, tmp_path):
    url = f"sqlite:///{tmp_path / 'target.db'}"
    check_sql_sink(url, url, sqlite_store, finished, "docpipe_results")


def test_the_sql_sink_upserts_by_run_id_on_postgresql(pg_url, sqlite_store, finished):
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:  # a schema of its own: the store's tests wipe public
            conn.exec_driver_sql("DROP SCHEMA IF EXISTS sinktest CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA sinktest")
        check_sql_sink(pg_url, f"{pg_url}#sinktest.results", sqlite_store, finished, "sinktest.results")
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA IF EXISTS sinktest CASCADE")
        engine.dispose()


# --- the webhook ---------------------------------------------------------------------------------


def test_a_failing_webhook_is_retried_until_each_run_is_accepted_once(store_url, finished, monkeypatch):
    monkeypatch.setenv("DOCPIPE_TEST_HOOK_TOKEN", "Bearer s3cret")
    with Store(store_url) as store, receiver(fail_first=4) as hook:
        ids = finished(store, *[f"document {i}" for i in range(6)])
        sinks = make_sinks([{"name": "hook", "kind": "webhook", "url": hook.url,
                             "authorization_env": "DOCPIPE_TEST_HOOK_TOKEN", "headers": {"X-Team": "ap"}}])
        dispatcher = Dispatcher(store, sinks, owner="server-1", batch=4, backoff=(0.05, 0.1), poll_s=0.05)
        store.outbox.enqueue(["hook"], ids)
        dispatcher.start()
        dispatcher.wake()
        try:
            assert dispatcher.drain(30)
        finally:
            dispatcher.stop()
        assert sorted(hook.accepted) == sorted(ids)  # every run, each accepted once
        assert len(hook.posts) == len(ids) + 4
        refused_keys = [headers["Idempotency-Key"] for headers, _ in hook.posts[:4]]
        assert set(refused_keys) <= set(ids)  # a retry carries the run id it had
        headers, body = hook.posts[-1]
        assert headers["Content-Type"] == "application/json" and headers["Authorization"] == "Bearer s3cret"
        assert headers["X-Team"] == "ap" and headers["Idempotency-Key"] == body["run_id"]
        assert body["outputs"]["upper"].startswith("DOCUMENT") and body["flow"] == "t"
        rows = store.outbox.list(sink="hook")
        assert {d["status"] for d in rows} == {"delivered"}
        assert sum(d["attempts"] for d in rows) == 4
        assert "HTTP 503" in next(d["last_error"] for d in rows if d["attempts"])


def test_a_receiver_that_is_down_gets_everything_once_it_is_up(sqlite_store, finished, caplog):
    caplog.set_level(logging.WARNING, logger="docpipe.sinks.dispatch")
    port = free_port()
    ids = finished(sqlite_store, "a", "b", "c")
    sinks = make_sinks([f"hook=webhook:http://127.0.0.1:{port}/hook"])
    dispatcher = Dispatcher(sqlite_store, sinks, owner="s", backoff=(0.05,), poll_s=0.05)
    sqlite_store.outbox.enqueue(["hook"], ids)
    dispatcher.start()
    try:
        wait_for(lambda: dispatcher.counts["hook"]["failed"] >= 6)  # two attempts each
        assert dispatcher.pending() == 3
        assert "cannot reach" in sqlite_store.outbox.list(sink="hook")[0]["last_error"]
        for run_id in ids:  # each failed attempt logged once, naming sink and run
            logged = [r.getMessage() for r in caplog.records if run_id in r.getMessage()]
            assert logged and all(m.startswith(f"sink hook: run {run_id} not delivered") for m in logged)
        with receiver(port=port) as hook:
            assert dispatcher.drain(30)
    finally:
        dispatcher.stop()
    assert sorted(hook.accepted) == sorted(ids)
    for row in sqlite_store.outbox.list(sink="hook"):
        assert row["status"] == "delivered"
        assert len([r for r in caplog.records if row["run_id"] in r.getMessage()]) == row["attempts"]


def test_a_restarted_server_delivers_what_was_pending(tmp_path, finished):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    port = free_port()
    with Store(url) as store:
        ids = finished(store, "a", "b")
        first = Dispatcher(store, make_sinks([f"hook=webhook:http://127.0.0.1:{port}/hook"]), owner="s",
                           backoff=(0.05,), poll_s=0.05)
        store.outbox.enqueue(["hook"], ids)
        first.start()
        wait_for(lambda: first.counts["hook"]["failed"] >= 2)
        first.stop()
        assert first.pending() == 2
    with Store(url) as store, receiver(port=port) as hook:
        second = Dispatcher(store, make_sinks([f"hook=webhook:http://127.0.0.1:{port}/hook"]), owner="s2",
                            backoff=(0.05,), poll_s=0.05)
        second.start()
        try:
            assert second.drain(30)
        finally:
            second.stop()
        assert sorted(hook.accepted) == sorted(ids)
        assert set(delivery_statuses(store, "hook").values()) == {"delivered"}


def test_a_refusing_receiver_kills_the_delivery_but_429_is_retried(sqlite_store, finished, tmp_path):
    ids = finished(sqlite_store, "fine", "also fine")
    refused = tmp_path / "refused.txt"
    refused.write_text("x")
    with sqlite_store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE flow_runs SET document = ? WHERE id = ?", (str(refused), ids[1]))
    with receiver(refuse=422) as hook:
        dispatcher = Dispatcher(sqlite_store, make_sinks([f"hook=webhook:{hook.url}"]), owner="s",
                                backoff=(0.01,))
        sqlite_store.outbox.enqueue(["hook"], ids)
        assert dispatcher.drain(10)
        rows = {d["run_id"]: d for d in sqlite_store.outbox.list(sink="hook")}
        assert rows[ids[0]]["status"] == "delivered"
        assert rows[ids[1]]["status"] == "dead" and rows[ids[1]]["attempts"] == 1
        assert "HTTP 422" in rows[ids[1]]["last_error"]
        hook.refuse = 429  # too many requests: later, not never
        assert sqlite_store.outbox.retry_dead("hook") == 1
        retrying = Dispatcher(sqlite_store, make_sinks([f"hook=webhook:{hook.url}"]), owner="s",
                              backoff=(0.01,), max_attempts=3)
        assert retrying.drain(10)
        row = sqlite_store.outbox.list(sink="hook", run_id=ids[1])[0]
        assert row["status"] == "dead" and row["attempts"] == 3 and "HTTP 429" in row["last_error"]
    assert hook.accepted == [ids[0]]
