"""Skipping unchanged work: flows/idp.json over an OCR-heavy folder, first run vs ``--reuse``.

    python benchmarks/reuse.py [--docs 4] [--pages 2] [--dpi 200] [--json]

The folder: ``samples/scanned.pdf`` plus ``--docs`` generated image-only PDFs of
``--pages`` A4 pages of dense text each (rendered as ``ocr_throughput.py`` renders them,
each document its own text), so nearly all of the work is Tesseract's. Through the real
``docpipe run`` command, on a fresh SQLite store:

* ``first``: ``docpipe run flows/idp.json FOLDER -o first.csv`` — no ``--reuse``: what a
  user runs today (its thread and process steps record their cache keys anyway);
* ``reuse``: the same with ``--reuse``: every task whose block, model, params and inputs
  are unchanged takes its recorded outputs;
* ``reuse_again``: ``--reuse`` once more: now the inline step (``ocr.merge``), which records
  a key only with the policy on, is reused as well.

Figures: wall time of each command (process start, plugin loading and pool start-up
included) and the batch's own seconds (what the command prints), the ratios
first / reuse, and the task records by worker. Checked: every run succeeds, the results
files are identical (rows sorted by document), no OCR task runs in ``reuse`` and no task
at all in ``reuse_again``; a failed check exits 1. JSON on stdout, a summary on stderr
unless ``--json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "flows" / "idp.json"
DOCPIPE = str(Path(sys.executable).parent / "docpipe")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ocr_throughput import page_text  # noqa: E402 - the same dense pages


class CheckFailed(Exception):
    """A run failed or its results differ: the figures must not be trusted."""


def make_scan(path: Path, pages: int, dpi: int, seed: int) -> None:
    """An image-only PDF of ``pages`` A4 pages of text (no text layer), its own text per ``seed``."""
    import pymupdf

    rng = random.Random(seed)
    scans = pymupdf.open()
    for number in range(1, pages + 1):
        src = pymupdf.open()
        page = src.new_page()
        page.insert_text((56, 70), f"DOCUMENT {seed} PAGE {number}", fontsize=18, fontname="hebo")
        page.insert_textbox(pymupdf.Rect(56, 90, 539, 800), page_text(rng), fontsize=11, fontname="helv")
        pix = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
        out = scans.new_page(width=page.rect.width, height=page.rect.height)
        out.insert_image(out.rect, stream=pix.tobytes("png"))
    scans.save(path, garbage=3, deflate=True)


def run(folder: Path, out: Path, env: dict[str, str], *extra: str) -> dict[str, Any]:
    """One ``docpipe run`` of the idp flow: its wall and batch seconds and batch id."""
    t0 = time.perf_counter()
    done = subprocess.run([DOCPIPE, "run", str(FLOW), str(folder), "-o", str(out), "-q", *extra],
                          env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise CheckFailed(f"docpipe run {' '.join(extra)} exited {done.returncode}: {done.stderr[-2000:]}")
    found = re.search(r"in ([0-9.]+)s \(batch (\w+)\)", done.stderr)
    if found is None:
        raise CheckFailed(f"no summary line in: {done.stderr[-500:]}")
    return {"wall_seconds": round(wall, 3), "batch_seconds": float(found.group(1)), "batch": found.group(2)}


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return sorted(csv.DictReader(f), key=lambda r: r["document"])


def workers(db: Path, batch: str) -> dict[str, dict[str, int]]:
    """Succeeded task records of ``batch`` by step (map items as ``ocr[]``): ran / reused."""
    out: dict[str, dict[str, int]] = {}
    with sqlite3.connect(db) as conn:
        for step, worker in conn.execute(
                "SELECT t.step, t.worker FROM task_runs t JOIN flow_runs r ON r.id = t.flow_run_id "
                "WHERE r.batch_id = ? AND t.status = 'succeeded'", (batch,)):
            key = re.sub(r"\[\d+\]", "[]", step)
            slot = out.setdefault(key, {"ran": 0, "reused": 0})
            slot["reused" if worker == "reused" else "ran"] += 1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=4, help="generated scans besides samples/scanned.pdf")
    ap.add_argument("--pages", type=int, default=2, help="pages per generated scan")
    ap.add_argument("--dpi", type=int, default=200, help="resolution the scans are rendered at")
    ap.add_argument("--json", action="store_true", help="print only the JSON report")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="docpipe-reuse-"))
    try:
        folder = tmp / "in"
        folder.mkdir()
        shutil.copy(ROOT / "samples" / "scanned.pdf", folder / "scanned.pdf")
        for i in range(args.docs):
            make_scan(folder / f"scan{i:02d}.pdf", args.pages, args.dpi, seed=100 + i)
        db = tmp / "store.db"
        env = {**os.environ, "DOCPIPE_DB": f"sqlite:///{db}", "DOCPIPE_WORK_DIR": str(tmp / "work")}
        first = run(folder, tmp / "first.csv", env)
        reuse = run(folder, tmp / "reuse.csv", env, "--reuse")
        again = run(folder, tmp / "again.csv", env, "--reuse")
        results = rows(tmp / "first.csv")
        identical = results == rows(tmp / "reuse.csv") == rows(tmp / "again.csv")
        tasks = {name: workers(db, r["batch"]) for name, r in
                 (("first", first), ("reuse", reuse), ("reuse_again", again))}
        if not identical:
            raise CheckFailed("the results files differ")
        if any(v["ran"] for k, v in tasks["reuse"].items() if k.startswith("ocr")):
            raise CheckFailed(f"OCR ran again with --reuse: {tasks['reuse']}")
        if any(v["ran"] for v in tasks["reuse_again"].values()):
            raise CheckFailed(f"a task ran in the third run: {tasks['reuse_again']}")
        ocr_pages = tasks["first"].get("ocr[]", {}).get("ran", 0)
        report = {
            "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
            "folder": {"documents": args.docs + 1, "ocr_pages": ocr_pages, "dpi": args.dpi},
            "first": first, "reuse": reuse, "reuse_again": again,
            "speedup_wall": round(first["wall_seconds"] / reuse["wall_seconds"], 1),
            "speedup_batch": round(first["batch_seconds"] / max(reuse["batch_seconds"], 1e-3), 1),
            "results_identical": identical,
            "tasks": tasks,
        }
    except CheckFailed as exc:
        print(f"check failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report, indent=2))
    if not args.json:
        print(f"idp over {report['folder']['documents']} scans ({ocr_pages} OCR pages): first run "
              f"{first['wall_seconds']:.1f} s (batch {first['batch_seconds']:.1f} s), --reuse "
              f"{reuse['wall_seconds']:.1f} s (batch {reuse['batch_seconds']:.2f} s): "
              f"{report['speedup_wall']}x wall, {report['speedup_batch']}x batch; results identical",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
