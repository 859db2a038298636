"""Intake: submissions of documents as jobs (idempotent by key, also when two race), the
watched folder (settling, skipping, moving, restart safety), sources from plugins, and the
correlation ids a source or `docpipe run` takes from file names and sidecars.

The runner that claims and runs the jobs is played here by the store's own job API
(``store.jobs.claim`` / ``finish``) and, where a run record is needed, by the records the
engine hands the store writer."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support import DOCPIPE, TOYS, run_cli, write_flow

import docpipe
from docpipe.errors import FlowError
from docpipe.plugins import Registry
from docpipe.service import NotFound, ServiceError
from docpipe.service.intake import BadSidecar, correlation_for, plan_job, submit_documents
from docpipe.sources import Source, SourceConfig, make_sources, parse_source
from docpipe.sources.folder import FolderSource
from docpipe.status import JobStatus, Status
from docpipe.store import Store
from docpipe.store.records import run_finished, run_started

STEPS = [{"id": "read", "block": "toy.read"}, {"id": "upper", "block": "toy.upper"}]


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    return write_flow(tmp_path / "flow.json", STEPS, name="intake", outputs=["upper"])


@pytest.fixture
def store(store_url: str) -> Any:
    with Store(store_url) as s:
        yield s


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    return folder


def finish(store: Store, job: dict[str, Any], outcome: str, *, status: str = JobStatus.FINISHED,
           error: str | None = None) -> None:
    """What the runner does when a document's run ends: take the job and finish it."""
    claimed = store.jobs.claim("runner", limit=100, lease_s=30)
    assert job["id"] in {j["id"] for j in claimed} or store.jobs.get(job["id"])["status"] == JobStatus.RUNNING
    assert store.jobs.finish(job["id"], "runner", status=status, outcome=outcome, error=error)


def record_run(store: Store, job: dict[str, Any], status: str, *, kind: str | None = None,
               error: str | None = None, step: str | None = None) -> None:
    """The run record of ``job`` as the engine hands it to the store writer."""
    plan = plan_job(store, job, Registry(entry_points=False, extra=[TOYS]))
    flow_id = store.put_flow(plan.name, plan.version, plan.content_hash, plan.definition)
    if store.batch(job["batch_id"]) is None:
        store.start_batch(flow_id, {}, batch_id=job["batch_id"], inputs=[job["document"]])
    if store.get_run(job["run_id"], resolve_blobs=False) is None:
        store.writer.flow_run_started(run_started(job["run_id"], job["batch_id"], flow_id, job["document"],
                                                  time.time(), job["correlation_id"]))
    store.writer.flow_run_finished(run_finished(job["run_id"], status, time.time(), kind, error, step, {}))
    store.writer.flush()


# --- correlation ids -------------------------------------------------------------------


def test_correlation_from_name_and_sidecar(tmp_path):
    doc = tmp_path / "INV-7.pdf"
    doc.write_bytes(b"%PDF")
    assert correlation_for(doc, "none") is None
    assert correlation_for(doc, "name") == "INV-7"
    assert correlation_for(doc, "sidecar") is None  # no sidecar: no id
    side = tmp_path / "INV-7.pdf.meta.json"
    side.write_text(json.dumps({"correlation_id": "ticket-42", "other": 1}))
    assert correlation_for(doc, "sidecar") == "ticket-42"
    side.write_text(json.dumps({"other": 1}))
    assert correlation_for(doc, "sidecar") is None
    for bad, why in [("{not json", "not JSON"), ("[1]", "not a JSON object"),
                     (json.dumps({"correlation_id": 7}), "correlation_id must be"),
                     (json.dumps({"correlation_id": "x" * 256}), "at most 255")]:
        side.write_text(bad)
        with pytest.raises(BadSidecar, match=why) as caught:
            correlation_for(doc, "sidecar")
        assert "INV-7.pdf.meta.json" in str(caught.value)
    with pytest.raises(ServiceError, match="one of none, name, sidecar"):
        correlation_for(doc, "stem")


# --- submissions -----------------------------------------------------------------------


def test_a_submission_is_one_batch_of_document_jobs(store, registry, flow, tmp_path):
    docs = [(str(tmp_path / f"{n}.txt"), f"c-{n}") for n in "abc"]
    made = submit_documents(store, str(flow), docs, registry=registry, source="api", key="k1")
    assert not made.repeated and len(made.jobs) == 3
    assert {j["batch_id"] for j in made.jobs} == {made.batch_id}
    assert len({j["run_id"] for j in made.jobs}) == 3
    assert [j["idempotency_key"] for j in made.jobs] == ["k1", "k1#1", "k1#2"]
    assert [j["document"] for j in made.jobs] == [d for d, _ in docs]
    assert [j["correlation_id"] for j in made.jobs] == ["c-a", "c-b", "c-c"]
    assert all(j["kind"] == "document" and j["status"] == JobStatus.QUEUED and j["source"] == "api"
               for j in made.jobs)
    assert [(j["payload"]["n"], j["payload"]["seq"]) for j in made.jobs] == [(3, 0), (3, 1), (3, 2)]
    assert made.as_dict()["runs"][1] == {"run_id": made.jobs[1]["run_id"], "job_id": made.jobs[1]["id"],
                                         "document": docs[1][0]}
    again = submit_documents(store, str(flow), docs, registry=registry, source="api", key="k1")
    assert again.repeated and again.as_dict()["runs"] == made.as_dict()["runs"]
    assert again.batch_id == made.batch_id
    assert len(store.jobs.list(limit=100)) == 3
    other = submit_documents(store, str(flow), docs[:1], registry=registry, source="ui", key="k1")
    assert not other.repeated  # a key belongs to its source
    assert submit_documents(store, str(flow), docs[:1], registry=registry, source="api").batch_id != made.batch_id


def test_nothing_is_queued_for_a_bad_flow_or_params(store, registry, flow, tmp_path):
    doc = [(str(tmp_path / "a.txt"), None)]
    with pytest.raises(NotFound, match="no recorded flow nope"):
        submit_documents(store, "nope", doc, registry=registry, source="api")
    bad = write_flow(tmp_path / "bad.json", [{"id": "x", "block": "toy.missing"}])
    with pytest.raises(FlowError):
        submit_documents(store, str(bad), doc, registry=registry, source="api")
    with pytest.raises(ServiceError, match="api_key look secret"):
        submit_documents(store, str(flow), doc, registry=registry, source="api", params={"api_key": "s3cret"})
    with pytest.raises(ServiceError, match="no documents"):
        submit_documents(store, str(flow), [], registry=registry, source="api")
    with pytest.raises(ServiceError, match="1 to 200"):
        submit_documents(store, str(flow), doc, registry=registry, source="api", key="k" * 201)
    assert store.jobs.list() == []
    # a flow by its recorded name, but a client's request never names a server path
    submit_documents(store, str(flow), doc, registry=registry, source="watch:x")
    assert submit_documents(store, "intake", doc, registry=registry, source="api", files=False).jobs
    with pytest.raises(NotFound):
        submit_documents(store, str(flow), doc, registry=registry, source="api", files=False)


def test_two_identical_requests_racing_make_one_submission(store_url, registry, flow, tmp_path):
    docs = [(str(tmp_path / f"{n}.txt"), None) for n in range(4)]
    results: list[Any] = []
    gate = threading.Barrier(4)

    def submit() -> None:
        with Store(store_url) as own:
            gate.wait()
            results.append(submit_documents(own, str(flow), docs, registry=registry, source="api", key="race"))

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and sorted(r.repeated for r in results) == [False, True, True, True]
    assert len({r.batch_id for r in results}) == 1
    assert {json.dumps(r.as_dict()["runs"]) for r in results} == {json.dumps(results[0].as_dict()["runs"])}
    with Store(store_url) as s:
        assert len(s.jobs.list(limit=100)) == 4


def test_a_job_runs_the_flow_version_it_was_submitted_with(store, registry, flow, tmp_path):
    made = submit_documents(store, str(flow), [(str(tmp_path / "a.txt"), None)], registry=registry,
                            source="api")
    before = plan_job(store, made.jobs[0], registry)
    write_flow(flow, STEPS[:1], name="intake", outputs=["text"])  # edited while the job is queued
    after = plan_job(store, made.jobs[0], registry)
    assert after.content_hash == before.content_hash and [n for n in after.outputs] == ["upper"]


# --- sources: configuration and plugins ------------------------------------------------------


def test_sources_are_made_from_watch_values_and_config_tables(store, flow, inbox, monkeypatch):
    monkeypatch.setenv("DOCPIPE_DISABLE_PLUGINS", "*")  # the built-in kind needs no entry point
    registry = Registry(extra=[TOYS])
    assert parse_source(f"{inbox}:{flow}") == SourceConfig("watch", f"{inbox}:{flow}")
    with pytest.raises(ServiceError, match="not DIR:FLOW"):
        parse_source("just-a-folder")
    made = make_sources([f"{inbox}:{flow}",
                         {"kind": "watch", "spec": f"{inbox}:{flow}", "name": "second", "settle": 0.5,
                          "correlation_from": "name"}], store=store, registry=registry)
    assert [type(s) for s in made] == [FolderSource, FolderSource]
    assert made[0].name == f"watch:{inbox.resolve()}" and made[1].name == "second"
    assert made[1].settle == 0.5 and made[1].correlation_from == "name" and made[1].source == made[0].source
    with pytest.raises(ServiceError, match=r"no source kind 'kafka' \(known: watch\)"):
        make_sources([{"kind": "kafka", "spec": "x"}], store=store, registry=registry)
    with pytest.raises(ServiceError, match="two sources are named"):
        make_sources([f"{inbox}:{flow}", f"{inbox}:{flow}"], store=store, registry=registry)
    for options, why in [({"setle": 1}, "unknown option"), ({"settle": -1}, "seconds >= 0"),
                         ({"interval": "1s"}, "seconds >= 0"), ({"correlation_from": "stem"}, "one of"),
                         ({"params": [1]}, "params is a table")]:
        with pytest.raises(ServiceError, match=why):
            make_sources([SourceConfig("watch", f"{inbox}:{flow}", options=options)], store=store,
                         registry=registry)
    with pytest.raises(ServiceError, match="is not a folder"):
        make_sources([f"{inbox / 'nope'}:{flow}"], store=store, registry=registry)
    with pytest.raises(NotFound, match="no recorded flow missing"):
        make_sources([f"{inbox}:missing"], store=store, registry=registry)


class ListSource(Source):
    """A third party's source: the paths listed in a text file, each submitted once."""

    kind = "list"

    def poll(self) -> None:
        listing, _, flow = self.spec.rpartition(":")
        paths = [p for p in Path(listing).read_text().splitlines() if p]
        if paths:
            submit_documents(self.store, flow, [(p, Path(p).name) for p in paths], registry=self.registry,
                             source=self.name, keys=paths)
            self.counts["submitted"] += len(paths)


class ListPlugin:
    @docpipe.hookimpl
    def register_sources(self, register):
        register(ListSource)


class BrokenSources:
    @docpipe.hookimpl
    def register_sources(self, register):
        register(dict)


def test_a_plugin_registers_a_source_kind(store, flow, tmp_path, caplog):
    registry = Registry(entry_points=False, extra=[TOYS, ListPlugin(), BrokenSources()])
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tmp_path / 'a.txt'}\n{tmp_path / 'b.txt'}\n")
    (source,) = make_sources([{"kind": "list", "spec": f"{listing}:{flow}"}], store=store, registry=registry)
    assert "not a docpipe.sources.Source subclass" in caplog.text  # the broken one is named, not fatal
    assert source.name == f"list:{listing}:{flow}"
    assert source.round() and source.round()  # the second round finds the same keys: nothing new
    jobs = store.jobs.list(source=source.name)
    assert sorted(j["correlation_id"] for j in jobs) == ["a.txt", "b.txt"]
    listing.write_text("")
    listing.unlink()
    assert not source.round()  # a failing round is counted, not raised
    assert source.status()["errors"] == 1 and "FileNotFoundError" in source.status()["last_error"]


# --- the watched folder -----------------------------------------------------------------------


def watch(store: Store, inbox: Path, flow: Path, **options: Any) -> FolderSource:
    """A watched folder over ``inbox`` (settling at once unless told). Its rounds are driven
    by hand with ``poll(now=...)``: the times given are far enough apart for every round to
    follow up its jobs, which a busy folder does less often."""
    options.setdefault("settle", 0)
    (source,) = make_sources([SourceConfig("watch", f"{inbox}:{flow}", options=options)], store=store,
                             registry=Registry(entry_points=False, extra=[TOYS]))
    assert isinstance(source, FolderSource)
    return source


def test_the_folder_skips_partial_hidden_and_sidecar_files(store, flow, inbox):
    for name in [".hidden", "a.part", "b.tmp", "c.crdownload", "d.txt~", "e.txt.meta.json"]:
        (inbox / name).write_text("x")
    (inbox / "sub").mkdir()
    (inbox / "sub" / "deep.txt").write_text("x")
    (inbox / "one.txt").write_text("one")
    (inbox / "two.txt").write_text("two")
    source = watch(store, inbox, flow)
    source.poll()
    jobs = store.jobs.list(source=source.source)
    assert sorted(Path(j["document"]).name for j in jobs) == ["one.txt", "two.txt"]
    assert len({j["batch_id"] for j in jobs}) == 1  # found ready together: one batch
    stat = (inbox / "one.txt").stat()
    assert f"one.txt|{stat.st_size}|{stat.st_mtime_ns}" in {j["idempotency_key"] for j in jobs}
    assert source.status()["submitted"] == 2


def test_a_growing_file_waits_until_it_settles(store, flow, inbox):
    source = watch(store, inbox, flow, settle=2)
    growing = inbox / "big.txt"
    growing.write_text("part one")
    source.poll(now=100.0)
    source.poll(now=101.5)
    with growing.open("a") as f:
        f.write(" part two")
    source.poll(now=102.5)  # changed: the wait starts again
    source.poll(now=104.0)
    assert store.jobs.list() == []
    source.poll(now=104.6)
    (job,) = store.jobs.list()
    assert job["document"] == str(growing)


def test_finished_files_move_to_done_and_failed(store, flow, inbox):
    for name in ["ok.txt", "bad.txt", "broke.txt", "review.txt"]:
        (inbox / name).write_text(name)
    (inbox / "ok.txt.meta.json").write_text("{}")
    (inbox / "done").mkdir()
    (inbox / "done" / "ok.txt").write_text("an earlier ok.txt")
    source = watch(store, inbox, flow)
    source.poll(now=1000.0)
    jobs = {Path(j["document"]).name: j for j in store.jobs.list()}
    finish(store, jobs["ok.txt"], Status.SUCCEEDED)
    record_run(store, jobs["bad.txt"], Status.FAILED, kind="block_error", error="no upper case", step="upper")
    finish(store, jobs["bad.txt"], Status.FAILED)
    store.jobs.finish(jobs["broke.txt"]["id"], "runner", status=JobStatus.ERROR, error="the plan broke")
    record_run(store, jobs["review.txt"], Status.WAITING)
    finish(store, jobs["review.txt"], Status.WAITING)
    source.poll(now=2000.0)
    assert (inbox / "done" / "ok.txt").read_text() == "an earlier ok.txt"  # never overwritten
    assert (inbox / "done" / "ok.1.txt").read_text() == "ok.txt"
    assert (inbox / "done" / "ok.1.txt.meta.json").exists()  # the sidecar goes with its file
    error = (inbox / "failed" / "bad.txt.error.txt").read_text()
    assert "error kind: block_error" in error and "step: upper" in error and "no upper case" in error
    assert "the plan broke" in (inbox / "failed" / "broke.txt.error.txt").read_text()
    assert (inbox / "review.txt").exists()  # waits for a person: stays
    source.poll(now=3000.0)
    assert (inbox / "review.txt").exists() and len(store.jobs.list()) == 4
    record_run(store, jobs["review.txt"], Status.SUCCEEDED)  # answered, continued, done
    source.poll(now=4000.0)
    assert (inbox / "done" / "review.txt").exists()
    assert sorted(p.name for p in inbox.iterdir()) == ["done", "failed"]
    assert source.status()["moved"] == 4


def test_a_bad_sidecar_fails_its_file_only(store, flow, inbox):
    (inbox / "a.txt").write_text("a")
    (inbox / "a.txt.meta.json").write_text("{broken")
    (inbox / "b.txt").write_text("b")
    (inbox / "b.txt.meta.json").write_text(json.dumps({"correlation_id": "ticket-b"}))
    source = watch(store, inbox, flow, correlation_from="sidecar")
    source.poll(now=5000.0)
    (job,) = store.jobs.list()
    assert (Path(job["document"]).name, job["correlation_id"]) == ("b.txt", "ticket-b")
    assert "a.txt.meta.json: not JSON" in (inbox / "failed" / "a.txt.error.txt").read_text()
    assert (inbox / "failed" / "a.txt.meta.json").exists()


def test_a_restart_never_runs_a_file_twice_nor_skips_one(store, flow, inbox):
    (inbox / "a.txt").write_text("a")
    first = watch(store, inbox, flow, settle=1)
    first.poll(now=0.0)
    first.poll(now=1.5)  # a.txt submitted
    (inbox / "b.txt").write_text("b")
    first.poll(now=2.0)  # b.txt seen, not settled: the server stops here
    (job_a,) = store.jobs.list()
    finish(store, job_a, Status.SUCCEEDED)  # its run ends while no source follows it

    second = watch(store, inbox, flow, settle=1)
    second.poll(now=50.0)
    second.poll(now=51.5)
    assert (inbox / "done" / "a.txt").exists()  # its finished job came back: moved, not run again
    jobs = store.jobs.list()
    assert sorted(Path(j["document"]).name for j in jobs) == ["a.txt", "b.txt"]  # b.txt not skipped
    assert second.status()["submitted"] == 1

    third = watch(store, inbox, flow, settle=0)  # stopped between submit and move, again
    third.poll(now=6000.0)
    assert len(store.jobs.list()) == 2 and (inbox / "b.txt").exists()
    finish(store, next(j for j in jobs if j["document"].endswith("b.txt")), Status.SUCCEEDED)
    third.poll(now=6000.0)  # the jobs were just read: the next follow-up waits a little
    assert (inbox / "b.txt").exists()
    third.poll(now=7000.0)
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["a.txt", "b.txt"]


def test_the_folder_thread_submits_and_stops(store, flow, inbox):
    source = watch(store, inbox, flow, interval=0.02)
    source.start()
    try:
        (inbox / "a.txt").write_text("a")
        deadline = time.monotonic() + 30
        while not store.jobs.list() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert source.status()["running"]
    finally:
        source.stop()
    assert not source.status()["running"]
    assert [Path(j["document"]).name for j in store.jobs.list()] == ["a.txt"]
    assert source.status() | {"last_error": None} == {
        "name": source.name, "kind": "watch", "running": False, "seen": 1, "submitted": 1, "moved": 0,
        "errors": 0, "last_error": None}


# --- docpipe run --correlation-id-from -------------------------------------------------------


def test_run_takes_correlation_ids_from_names_and_sidecars(tmp_path, flow):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "INV-1.txt").write_text("one")
    (docs / "INV-2.txt").write_text("two")
    db = f"sqlite:///{tmp_path / 'runs.db'}"

    def ids(*extra: str) -> dict[str, str | None]:
        proc = run_cli("run", str(flow), str(docs), "--db", db, "-q", "--plugin", TOYS, *extra)
        assert proc.returncode == 0, proc.stderr
        with Store(db) as s:
            batch = s.list_batches(limit=1)[0]["id"]
            return {Path(r["document"]).name: r["correlation_id"] for r in s.list_runs(batch_id=batch)}

    assert ids("--correlation-id-from", "name") == {"INV-1.txt": "INV-1", "INV-2.txt": "INV-2"}
    (docs / "INV-2.txt.meta.json").write_text(json.dumps({"correlation_id": "ticket-2"}))
    assert ids("--correlation-id-from", "sidecar") == {"INV-1.txt": None, "INV-2.txt": "ticket-2"}
    both = run_cli("run", str(flow), str(docs), "--db", db, "--correlation-id", "x", "--correlation-id-from",
                   "name", "--plugin", TOYS)
    assert both.returncode == 2 and "not both" in both.stderr
    (docs / "INV-1.txt.meta.json").write_text("[]")
    bad = run_cli("run", str(flow), str(docs), "--db", db, "--correlation-id-from", "sidecar", "--plugin", TOYS)
    assert bad.returncode == 2 and "INV-1.txt.meta.json: not a JSON object" in bad.stderr


# --- end to end: a real runner on a real engine ------------------------------------------------


def test_a_watched_folder_through_a_real_runner(store_url, flow, inbox, monkeypatch, tmp_path):
    from docpipe.service.worker import Runner

    monkeypatch.setenv("DOCPIPE_BLOBS", str(tmp_path / "blobs"))
    (inbox / "hello.txt").write_text("hello world")
    (inbox / "empty.txt").write_text("")  # toy.read: a corrupt document
    registry = Registry(entry_points=False, extra=[TOYS])
    with Store(store_url) as runner_store, Store(store_url) as store:
        runner = Runner(runner_store, registry, workers=1, poll_s=0.05)
        runner.start()
        source = watch(store, inbox, flow, interval=0.05, correlation_from="name")
        source.start()
        try:
            deadline = time.monotonic() + 60
            while source.status()["moved"] < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            source.stop()
            runner.stop()
    assert (inbox / "done" / "hello.txt").read_text() == "hello world"
    error = (inbox / "failed" / "empty.txt.error.txt").read_text()
    assert "error kind: corrupt" in error and "step: read" in error and "empty file" in error
    with Store(store_url) as store:
        runs = {Path(r["document"]).name: r for r in store.list_runs()}
        assert runs["hello.txt"]["status"] == Status.SUCCEEDED and runs["hello.txt"]["correlation_id"] == "hello"
        assert store.get_run(runs["hello.txt"]["id"])["outputs"]["upper"] == "HELLO WORLD"
        assert len(store.jobs.list()) == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(port: int, db: str, tmp_path: Path, config: Path, log: Path) -> subprocess.Popen[bytes]:
    """The real ``docpipe serve`` with the sources of ``config``, logging to ``log``."""
    return subprocess.Popen([DOCPIPE, "serve", "--port", str(port), "--db", db, "--data-dir", str(tmp_path / "data"),
                             "--plugin", TOYS, "--workers", "1", "--lease", "2", "--config", str(config)],
                            env={**os.environ, "DOCPIPE_TOKEN": "t0ken-for-tests"}, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, cwd=tmp_path)


def _until(check: Any, what: str, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} after {timeout}s; the servers' log:\n{log.read_text()[-4000:]}")
        time.sleep(0.05)


@pytest.mark.slow
def test_a_server_killed_mid_folder_runs_each_file_once(tmp_path, inbox):
    """kill -9 a server while it runs a watched folder; a new one finishes the folder: every
    file ends in done/ once, its run recorded once, none skipped, none run twice."""
    flow = write_flow(tmp_path / "slow.json", [*STEPS, {"id": "nap", "block": "toy.sleep",
                                                        "params": {"seconds": 0.3}}], name="slow")
    config = tmp_path / "serve.toml"
    config.write_text(f'[[sources]]\nkind = "watch"\nspec = "{inbox}:{flow}"\ninterval = 0.05\nsettle = 0.1\n')
    names = [f"doc{i}.txt" for i in range(8)]
    for name in names:
        (inbox / name).write_text(f"text {name}")
    db, log = f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "serve.log"
    done = inbox / "done"

    def moved() -> set[str]:
        return {p.name for p in done.iterdir()} if done.exists() else set()

    first = _serve(free_port(), db, tmp_path, config, log)
    try:
        _until(lambda: len(moved()) >= 2, "no file was done", log)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert len(moved()) < len(names), "the server finished the folder before it was killed"
    second = _serve(free_port(), db, tmp_path, config, log)
    try:
        _until(lambda: moved() == set(names), "the folder was not finished", log)
    finally:
        second.terminate()
        second.wait(60)
    assert not (inbox / "failed").exists() and sorted(p.name for p in inbox.iterdir()) == ["done"]
    with Store(db) as store:
        runs = store.list_runs(limit=100)
        assert sorted(Path(r["document"]).name for r in runs) == names  # one run per file
        assert {r["status"] for r in runs} == {Status.SUCCEEDED}
        jobs = store.jobs.list(limit=100)
        assert len(jobs) == len(names) and {j["status"] for j in jobs} == {JobStatus.FINISHED}
        assert any(j["claims"] > 1 for j in jobs)  # the dead server's jobs were taken over
