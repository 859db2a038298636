"""`docpipe run` end to end: real files, real records, real result files."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest
from support import ROOT, TOYS, run_cli, write_flow

SAMPLES = ROOT / "samples"


@pytest.mark.slow
def test_demo_flow_over_the_samples(tmp_path: Path):
    out = tmp_path / "results.csv"
    db = tmp_path / "runs.db"
    proc = run_cli("run", str(ROOT / "flows" / "idp.json"), str(SAMPLES), "--out", str(out),
                   "--db", f"sqlite:///{db}", "--summary", env={"DOCPIPE_PDF_PASSWORD": "docpipe"},
                   timeout=600)
    assert proc.returncode == 1, proc.stderr  # the corrupt sample fails, by design
    rows = {Path(r["document"]).name: r for r in csv.DictReader(out.open())}
    assert set(rows) == {p.name for p in SAMPLES.iterdir()}
    ok = {name for name, r in rows.items() if r["status"] == "succeeded"}
    assert ok == set(rows) - {"corrupt.pdf"}
    assert (rows["corrupt.pdf"]["error_kind"], rows["corrupt.pdf"]["status"]) == ("corrupt", "failed")
    assert rows["invoice.pdf"]["page_count"] == "2"
    assert rows["encrypted.pdf"]["encrypted"] == "True"
    assert (rows["scanned.pdf"]["pages_ocrd"], rows["scan.png"]["pages_ocrd"]) == ("1", "1")
    assert [rows[n]["language"] for n in ("report_de.pdf", "lettre_fr.pdf", "invoice.pdf")] == [
        "de", "fr", "en"]
    policy = rows["security_policy.pdf"]
    assert int(policy["control_id_count"]) >= 8
    ids = {c["id"] for c in json.loads(policy["control_ids"])}
    assert {"AC-2", "A.5.15", "CC6.1"} <= ids
    assert "multi-factor authentication" in json.loads(policy["keywords"])
    assert "Northwind Office Supplies Ltd" in json.loads(rows["invoice.pdf"]["organizations"])
    # NER by language: no German model, so no entities (not English ones) and a reason
    assert (rows["report_de.pdf"]["organizations"], rows["report_de.pdf"]["ner_status"]) == (
        "[]", "unsupported_language")
    assert "Lyon" in json.loads(rows["lettre_fr.pdf"]["locations"])  # the French model
    # no translation model ships: the step is skipped until -p translation_model=FOLDER
    assert all(r["translation"] == r["translated_from"] == "" for r in rows.values())
    assert (rows["invoice.pdf"]["doc_class"], rows["scan.png"]["doc_class"]) == ("invoice", "receipt")
    assert "7 succeeded, 1 failed" in proc.stderr or "7 succeeded, 1 failed" in proc.stdout
    assert "security_policy.pdf" in proc.stdout  # the --summary table
    # every transition is in the store
    con = sqlite3.connect(db)
    statuses = dict(con.execute("select document, status from flow_runs").fetchall())
    assert statuses[str(SAMPLES / "corrupt.pdf")] == "failed"
    tasks = con.execute("select step, task_runs.status, worker, task_runs.error_kind from task_runs "
                        "join flow_runs on flow_runs.id = task_runs.flow_run_id "
                        "where document = ?", (str(SAMPLES / "corrupt.pdf"),)).fetchall()
    # qpdf cannot open it, PyMuPDF can: pdf.decrypt hands it on, pdf.text finds its pages gone
    assert [t[:2] for t in tasks] == [("decrypt", "succeeded"), ("text", "failed")]
    assert tasks[1][2].startswith("pid:") and tasks[1][3] == "corrupt"


def test_run_with_params_globs_jsonl_and_verbose_tracebacks(tmp_path: Path):
    docs = tmp_path / "in"
    docs.mkdir()
    for i in range(5):
        (docs / f"d{i}.txt").write_text(f"some words {i}" + (" boom" if i == 3 else ""))
    (docs / "skip.md").write_text("not matched by the glob")
    flow = write_flow(tmp_path / "f.json", [
        {"id": "read", "block": "toy.read"},
        {"id": "dig", "block": "toy.digest", "params": {"rounds": "${params.rounds}"}},
        {"id": "check", "block": "toy.fragile"},
    ], params={"rounds": 1}, outputs=["digest", "digest_batch", "checked"])
    out = tmp_path / "out.jsonl"
    proc = run_cli("run", str(flow), str(docs / "*.txt"), "--plugin", TOYS, "-p", "rounds=7",
                   "--out", str(out), "--db", f"sqlite:///{tmp_path / 'd.db'}", "-v", "-w", "2")
    assert proc.returncode == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 and [Path(r["document"]).name for r in rows] == [f"d{i}.txt" for i in range(5)]
    bad = rows[3]
    assert bad["status"] == "failed" and "boom found in batch" in bad["error"]
    assert (bad["error_kind"], bad["failed_step"]) == ("block_error", "check")
    assert rows[0]["failed_step"] is None and rows[0]["error_kind"] is None
    assert "Traceback" in proc.stderr and "raise ValueError" in proc.stderr
    import hashlib
    h = b"some words 0"
    for _ in range(7):
        h = hashlib.sha256(h).digest()
    assert rows[0]["digest"] == h.hex()


def test_runs_list_and_show_read_the_history(tmp_path: Path):
    db = f"sqlite:///{tmp_path / 'd.db'}"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.txt").write_text("")
    (tmp_path / "in" / "ok.txt").write_text("fine")
    flow = write_flow(tmp_path / "f.json", [{"id": "read", "block": "toy.read"},
                                            {"id": "up", "block": "toy.upper"}])
    assert run_cli("run", str(flow), str(tmp_path / "in"), "--plugin", TOYS, "--db", db,
                   "-q").returncode == 1
    listing = run_cli("runs", "list", "--status", "failed", "--db", db)
    assert listing.returncode == 0
    assert "empty.txt" in listing.stdout and "ok.txt" not in listing.stdout
    assert "[corrupt] step 'read':" in listing.stdout
    (failed,) = json.loads(run_cli("runs", "list", "--status", "failed", "--json", "--db", db).stdout)
    assert (failed["error_kind"], failed["failed_step"]) == ("corrupt", "read")
    out = tmp_path / "again.csv"
    run_cli("run", str(flow), str(tmp_path / "in"), "--plugin", TOYS, "--db", db, "-q",
            "--resume", "--out", str(out))  # results written again from the records
    by_name = {Path(r["document"]).name: r for r in csv.DictReader(out.open())}
    assert list(by_name["empty.txt"])[:5] == ["document", "status", "error_kind", "error", "failed_step"]
    assert (by_name["empty.txt"]["failed_step"], by_name["ok.txt"]["failed_step"]) == ("read", "")
    con = sqlite3.connect(tmp_path / "d.db")
    (run_id,) = con.execute("select id from flow_runs where status = 'failed'").fetchone()
    show = run_cli("runs", "show", run_id, "--db", db)
    assert show.returncode == 0
    assert "read" in show.stdout and "failed" in show.stdout and "empty file" in show.stdout


def test_missing_input_is_a_usage_error(tmp_path: Path):
    proc = run_cli("run", str(ROOT / "flows" / "idp.json"), str(tmp_path / "nope.pdf"))
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr


def test_inputs_that_are_not_regular_files_are_refused_unopened(tmp_path: Path):
    """A FIFO given as an input used to block the batch for ever: it (and a device, a folder
    given as a file) gets a typed 'unsupported' row without being opened; a folder walk skips
    such entries with a warning; the good documents run."""
    import os

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.txt").write_text("some words here")
    os.mkfifo(folder / "pipe.txt")
    (folder / "loop").symlink_to(folder / "loop")
    flow = write_flow(tmp_path / "f.json", [{"id": "read", "block": "toy.read"},
                                            {"id": "w", "block": "toy.words"}], outputs=["words"])
    out = tmp_path / "r.csv"
    db = f"sqlite:///{tmp_path / 'd.db'}"
    proc = run_cli("run", str(flow), str(folder / "pipe.txt"), str(folder / "good.txt"), "/dev/null",
                   "--plugin", TOYS, "--db", db, "--out", str(out), "-q", timeout=60)
    assert proc.returncode == 1, proc.stderr
    rows = {Path(r["document"]).name: r for r in csv.DictReader(out.open())}
    assert rows["good.txt"]["status"] == "succeeded" and rows["good.txt"]["words"] == "3"
    for name, what in (("pipe.txt", "a named pipe (FIFO)"), ("null", "a device")):
        assert (rows[name]["error_kind"], rows[name]["failed_step"]) == ("unsupported", "input")
        assert what in rows[name]["error"]
    walked = run_cli("run", str(flow), str(folder), "--plugin", TOYS, "--db", db, "-q", timeout=60)
    assert walked.returncode == 0, walked.stderr
    assert "skipped" in walked.stderr and "pipe.txt" in walked.stderr and "loop" in walked.stderr
    assert "1 succeeded, 0 failed" in walked.stderr


def test_an_unwritable_out_is_refused_before_the_first_document(tmp_path: Path):
    (tmp_path / "in.txt").write_text("words")
    (tmp_path / "a-file").write_text("not a folder")
    flow = write_flow(tmp_path / "f.json", [{"id": "read", "block": "toy.read"}])
    db = tmp_path / "d.db"
    proc = run_cli("run", str(flow), str(tmp_path / "in.txt"), "--plugin", TOYS, "--db",
                   f"sqlite:///{db}", "--out", str(tmp_path / "a-file" / "r.csv"), "-q")
    assert proc.returncode == 2 and "cannot write" in proc.stderr and "Traceback" not in proc.stderr
    if db.exists():  # refused before a batch was recorded
        assert sqlite3.connect(db).execute("select count(*) from batches").fetchone() == (0,)


def test_file_names_that_are_not_utf8_are_recorded_losslessly(tmp_path: Path, store_url: str):
    """Issue 13.1: a name that is not valid UTF-8 (names are bytes on Linux) crashed the whole
    batch in the store. It is recorded as text with \\xff escapes, its exact bytes kept for
    resume and retry; names with spaces, a newline or a leading dash work too."""
    import os

    folder = tmp_path / "in"
    folder.mkdir()
    names = [b"bad\xff name.txt", b"empty\xfe.txt", b"line\nbreak.txt", b"-dash.txt", b"good.txt"]
    for name in names:
        data = b"" if name.startswith(b"empty") else b"some words here"
        with open(os.path.join(os.fsencode(folder), name), "wb") as f:
            f.write(data)
    flow = write_flow(tmp_path / "f.json", [{"id": "read", "block": "toy.read"},
                                            {"id": "w", "block": "toy.words"}], outputs=["words"])
    out = tmp_path / "r.csv"
    proc = run_cli("run", str(flow), str(folder), "--plugin", TOYS, "--db", store_url,
                   "--out", str(out), "-q")
    assert proc.returncode == 1, proc.stderr  # the empty file fails, by design
    rows = {r["document"]: r for r in csv.DictReader(out.open(encoding="utf-8"))}
    shown = {os.fsdecode(n).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
             for n in names}
    assert {Path(d).name for d in rows} == shown
    assert rows[str(folder / "bad\\xff name.txt")]["words"] == "3"
    bad = rows[str(folder / "empty\\xfe.txt")]
    assert (bad["status"], bad["error_kind"], bad["failed_step"]) == ("failed", "corrupt", "read")
    assert "\\xfe" in bad["error"] and "Traceback" not in proc.stderr
    # the empty file gets its words; the retry opens the very file (its exact bytes)
    with open(os.path.join(os.fsencode(folder), b"empty\xfe.txt"), "wb") as f:
        f.write(b"now it has words")
    batch = run_cli("runs", "batches", "--db", store_url).stdout.split()
    batch_id = next(w for w in batch if len(w) == 32)
    retried = run_cli("runs", "retry", batch_id, "--db", store_url, "--plugin", TOYS,
                      "--out", str(out), "-q")
    assert retried.returncode == 0, retried.stderr
    rows = {Path(r["document"]).name: r for r in csv.DictReader(out.open(encoding="utf-8"))}
    assert rows["empty\\xfe.txt"]["status"] == "succeeded" and rows["empty\\xfe.txt"]["words"] == "4"


def test_an_empty_input_folder_warns_and_exits_3_without_a_batch(tmp_path: Path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / ".hidden.txt").write_text("skipped, like every hidden file")
    flow = write_flow(tmp_path / "f.json", [{"id": "read", "block": "toy.read"}])
    db = tmp_path / "d.db"
    proc = run_cli("run", str(flow), str(tmp_path / "in"), "--plugin", TOYS, "--db", f"sqlite:///{db}")
    assert proc.returncode == 3, proc.stderr
    assert "warning: no input file in" in proc.stderr and "0 succeeded" not in proc.stderr
    assert not db.exists()
    assert "3 no input file" in run_cli("run", "--help").stdout


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_result_files_honour_the_umask_and_keep_a_replaced_files_mode(tmp_path: Path, umask, expected):
    import os
    import stat

    from docpipe.outputs import write_results

    rows = [{"document": "a.pdf", "status": "succeeded", "outputs": {"n": 1}}]
    old = os.umask(umask)
    try:
        new = write_results(tmp_path / "r.csv", rows, ["n"])
    finally:
        os.umask(old)
    assert stat.S_IMODE(new.stat().st_mode) == expected
    new.chmod(0o604)  # someone chose this mode: writing the results again keeps it
    assert stat.S_IMODE(write_results(new, rows, ["n"]).stat().st_mode) == 0o604
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]
