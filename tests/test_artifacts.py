"""Artifacts: a decrypted copy belongs to its document's run, not to the worker that made it.

The reproduction of issue 12.1 with the real blocks (pdf.decrypt, pdf.text, Tesseract OCR)
on encrypted scanned PDFs: ``kill -9`` of ``docpipe run`` after every decrypt succeeded,
then ``docpipe resume``, on SQLite and on the real PostgreSQL server; a SIGKILLed decrypt
worker; a retry by a new engine after the run failed; the sweep of what a killed engine
left. Decrypted content is on disk only while its run needs it.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pikepdf
import pytest
from support import DOCPIPE, TOYS, kill_decrypt_workers_when, run_cli
from test_resume import db_rows

from docpipe.artifacts import WorkArea
from docpipe.engine import Engine
from docpipe.planner import build_plan
from docpipe.plugins import Registry
from docpipe.store import Store

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
PASSWORD = "pw-Artifacts-12"
MEMO = "Fabrikam Components"  # text only the decrypted samples/encrypted.pdf yields

pytestmark = pytest.mark.slow


def encrypted_copies(folder: Path, source: Path, names: list[str], password: str = "docpipe") -> list[Path]:
    """``source`` re-encrypted under the user password ``PASSWORD``, once per name."""
    folder.mkdir(exist_ok=True)
    out = []
    for name in names:
        with pikepdf.open(source, password=password) as pdf:
            pdf.save(folder / name, encryption=pikepdf.Encryption(user=PASSWORD, owner=PASSWORD + "-o"))
        out.append(folder / name)
    return out


def run_folders(work: Path) -> list[Path]:
    """The run folders in the work area (not the engines' lock folder)."""
    return sorted(p for p in work.iterdir() if p.name != "owners") if work.exists() else []


def decrypted_files(work: Path) -> list[Path]:
    return sorted(p for folder in run_folders(work) for p in folder.glob("*.pdf"))


def steps_flow(*steps: dict[str, Any], outputs: list[str]) -> dict[str, Any]:
    return {"name": "artifacts", "version": "1", "params": {"pdf_password": None},
            "outputs": outputs,
            "steps": [{"id": "decrypt", "block": "pdf.decrypt",
                       "params": {"password": "${params.pdf_password}"}}, *steps]}


OCR_FLOW = steps_flow(
    {"id": "text", "block": "pdf.text", "inputs": {"path": "pdf_path"}},
    {"id": "ocr", "map": "needs_ocr_pages", "as": "page", "block": "ocr.tesseract",
     "inputs": {"path": "pdf_path"}, "params": {"dpi": 200}},
    {"id": "merge", "block": "ocr.merge"},
    outputs=["encrypted", "page_count", "pages_ocrd", "full_text"])


def succeeded_steps(url: str, step: str) -> dict[str, int]:
    rows = db_rows(url, "select r.document, count(*) from task_runs t join flow_runs r "
                        f"on t.flow_run_id = r.id where t.step = '{step}' and t.status = 'succeeded' "
                        "group by r.document")
    return {Path(doc).name: n for doc, n in rows}


@pytest.mark.parametrize("after_the_kill", ["resume", "another run first"])
def test_encrypted_scans_survive_sigkill_of_the_engine_and_resume(tmp_path: Path, store_url: str,
                                                                   after_the_kill: str) -> None:
    names = ["a.pdf", "b.pdf", "c.pdf"]
    docs = encrypted_copies(tmp_path / "in", SAMPLES / "scanned.pdf", names, password="")
    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps(OCR_FLOW))
    work = tmp_path / "work"
    env = {**os.environ, "DOCPIPE_WORK_DIR": str(work), "DOCPIPE_PDF_PASSWORD": PASSWORD,
           "COLUMNS": "200"}
    out = tmp_path / "results.csv"
    proc = subprocess.Popen([DOCPIPE, "run", str(flow), *map(str, docs), "--db", store_url,
                             "--out", str(out), "-w", "1", "-q"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while sum(succeeded_steps_or_none(store_url).values()) < 3:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.time() < deadline, "the decrypt steps never finished"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # during OCR: Tesseract takes seconds a page
    proc.wait()
    finished = db_rows(store_url, "select count(*) from flow_runs where status != 'running'")[0][0]
    assert finished == 0, "the runs ended before the kill: the test did not test anything"
    # the killed engine could not clean up: the copies are there, in the runs' own folders
    assert len(decrypted_files(work)) == 3
    (batch_id,), = db_rows(store_url, "select id from batches")

    if after_the_kill == "another run first":
        # any later engine on this work area sweeps what the dead one left
        other = run_cli("run", str(flow), str(SAMPLES / "invoice.pdf"), "--db", store_url, "-q",
                        env={"DOCPIPE_WORK_DIR": str(work)})
        assert other.returncode == 0, other.stderr
        assert run_folders(work) == [] and decrypted_files(work) == []

    resumed = run_cli("resume", batch_id, "--db", store_url, "--out", str(out), "-w", "1", "-q",
                      "-p", f"pdf_password={PASSWORD}",
                      env={"DOCPIPE_WORK_DIR": str(work), "DOCPIPE_PDF_PASSWORD": ""}, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    rows = {Path(r["document"]).name: r for r in csv.DictReader(out.open())}
    assert sorted(rows) == names
    for row in rows.values():
        assert (row["status"], row["error_kind"], row["encrypted"]) == ("succeeded", "", "True"), row
        assert row["pages_ocrd"] == "1" and "DN-2024-0107" in row["full_text"], row
    # found again after the kill (decrypt was not run again), or decrypted anew after the sweep
    expected = 1 if after_the_kill == "resume" else 2
    decrypted = succeeded_steps(store_url, "decrypt")
    assert {n: decrypted[n] for n in names} == {n: expected for n in names}
    # every run ended: nothing decrypted is left on disk, and no engine lock
    assert run_folders(work) == []
    assert list((work / "owners").iterdir()) == []


def succeeded_steps_or_none(url: str) -> dict[str, int]:
    try:
        return succeeded_steps(url, "decrypt")
    except Exception:  # noqa: BLE001 - the database or its tables are not there yet
        return {}


def test_a_sigkilled_decrypt_worker_loses_nothing(tmp_path: Path) -> None:
    docs = [SAMPLES / "encrypted.pdf"] + encrypted_copies(tmp_path / "in", SAMPLES / "encrypted.pdf",
                                                          ["b.pdf", "c.pdf"])
    plan = build_plan(steps_flow(
        {"id": "wait", "block": "toy.file_head", "inputs": {"path": "pdf_path"},
         "params": {"seconds": 1.5}},
        {"id": "text", "block": "pdf.text", "inputs": {"path": "pdf_path"}},
        outputs=["encrypted", "file_head", "text"]), Registry(extra=[TOYS]),
        params={"pdf_password": None})
    work = tmp_path / "work"
    os.environ["DOCPIPE_PDF_PASSWORD"] = PASSWORD
    try:
        with Store(f"sqlite:///{tmp_path / 'runs.db'}") as store, \
                Engine(store, workers=1, work_dir=work) as engine:
            with kill_decrypt_workers_when(engine, work, copies=2) as killed:
                result = engine.run(plan, [str(d) for d in docs])
    finally:
        del os.environ["DOCPIPE_PDF_PASSWORD"]
    assert killed
    by_name = {Path(r.document).name: r for r in result.results}
    # samples/encrypted.pdf has another password: it fails; the other two survive the kill
    assert by_name["encrypted.pdf"].error_kind in ("encrypted", "wrong_password")
    for name in ("b.pdf", "c.pdf"):
        r = by_name[name]
        assert r.status == "succeeded", r.error
        assert r.outputs["file_head"].startswith("%PDF-") and MEMO in r.outputs["text"]
    assert run_folders(work) == []


def test_a_retry_by_a_new_engine_decrypts_again(tmp_path: Path) -> None:
    (doc,) = encrypted_copies(tmp_path / "in", SAMPLES / "encrypted.pdf", ["memo.pdf"])
    ready = tmp_path / "service-is-back"
    plan = build_plan(steps_flow(
        {"id": "text", "block": "pdf.text", "inputs": {"path": "pdf_path"}},
        {"id": "check", "block": "toy.file_head", "inputs": {"path": "pdf_path"},
         "params": {"until": str(ready)}},
        outputs=["encrypted", "text", "file_head"]), Registry(extra=[TOYS]),
        params={"pdf_password": PASSWORD})
    work = tmp_path / "work"
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with Store(url) as store, Engine(store, workers=1, work_dir=work) as engine:
        first = engine.run(plan, [str(doc)])
    (failed,) = first.results
    assert (failed.status, failed.step) == ("failed", "check")
    assert run_folders(work) == []  # the run ended: its decrypted copy is gone with it
    ready.touch()
    # a new engine (new workers) retries: the restored pdf_path names a file that is gone,
    # so the decrypt step runs again; pdf.text's result is restored as it was
    with Store(url) as store, Engine(store, workers=1, work_dir=work) as engine:
        again = engine.resume(plan, first.batch_id or "", retry_failed=True)
        run = store.get_run(failed.run_id)
    (r,) = again.results
    assert r.status == "succeeded", r.error
    assert r.outputs["file_head"].startswith("%PDF-") and MEMO in r.outputs["text"]
    ran = [(t["step"], t["status"]) for t in run["tasks"]]
    assert ran.count(("decrypt", "succeeded")) == 2 and ran.count(("text", "succeeded")) == 1
    assert run_folders(work) == []


def test_the_sweep_spares_live_engines_and_unowned_folders_being_made(tmp_path: Path) -> None:
    work = tmp_path / "work"
    live, dead = WorkArea(work, "live-engine"), WorkArea(work, "dead-engine")
    live.ensure("run-live")
    dead.ensure("run-dead")
    (work / "run-dead" / "copy.pdf").write_bytes(b"%PDF-secret")
    (work / "run-being-made").mkdir()  # no owner yet: another engine is making it
    assert dead._lock_fd is not None
    os.close(dead._lock_fd)  # as if SIGKILLed: the lock goes, the files stay
    dead._lock_fd = None
    assert live.sweep() == ["run-dead"]
    assert sorted(p.name for p in run_folders(work)) == ["run-being-made", "run-live"]
    assert [p.name for p in (work / "owners").iterdir()] == ["live-engine.lock"]
    # an engine resuming a dead engine's run adopts its folder before sweeping
    (work / "run-resumed").mkdir()
    (work / "run-resumed" / ".owner").write_text("dead-engine")
    heir = WorkArea(work, "heir")
    heir.adopt(["run-resumed"])
    assert heir.sweep() == []
    assert (work / "run-resumed" / ".owner").read_text() == "heir"
    for area in (live, heir):
        area.close(remove_all=True)
    assert sorted(p.name for p in run_folders(work)) == ["run-being-made"]


def test_workers_keep_their_temporary_files_in_the_engines_folder(tmp_path: Path) -> None:
    """Issue 13.11: workers write temporary files (Tesseract's images, torch's caches) into
    their engine's own folder, which goes when the engine closes (or the next engine sweeps
    it after a kill); nothing lands in the system's temporary folder."""
    import tempfile

    plan = build_plan({"name": "temp", "version": "1", "outputs": ["temp_file"],
                       "steps": [{"id": "read", "block": "toy.read"},
                                 {"id": "leave", "block": "toy.leave_temp"}]},
                      Registry(extra=[TOYS]))
    (tmp_path / "a.txt").write_text("words")
    work = tmp_path / "work"
    with Engine(workers=1, work_dir=work) as engine:
        (r,) = engine.run(plan, [str(tmp_path / "a.txt")]).results
        left = Path(r.outputs["temp_file"])
        assert left.exists() and left.parent.parent == work and left.parent.name.startswith("tmp-")
        assert not str(left).startswith(tempfile.gettempdir() + os.sep + "left-behind-")
    assert not left.parent.exists()
    assert [p.name for p in work.iterdir()] == ["owners"]
