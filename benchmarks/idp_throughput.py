"""The whole idp flow on a mixed folder: docpipe with the budget, without it, and a script.

    python benchmarks/idp_throughput.py [--copies 4] [--scans 4] [--scan-pages 2]
                                        [--long-pages 80] [--rounds 1] [--json]

From issue 18 ("One budget for CPUs and GPUs"): in one run, on one folder of mixed
documents (the samples: text PDFs in English, French and German, an encrypted PDF, a scan
image and a scanned PDF, ``--copies`` of each; ``--scans`` generated image-only PDFs of
``--scan-pages`` dense A4 pages, rendered as ``benchmarks/ocr_throughput.py`` does; one long
text PDF of ``--long-pages`` pages), end to end as a user runs it, each in its own process:

* ``docpipe``: ``docpipe run flows/idp.json FOLDER -o results.jsonl`` (SQLite records), with
  the budget (the default: one budget of the machine's cores for every pool);
* ``docpipe_no_budget``: the same with ``DOCPIPE_BUDGET=0``: the pools as before the budget
  (every process block ``cores`` workers of one thread, no core tokens);
* ``script``: ``benchmarks/idp_script.py FOLDER``: what a user would write instead, a
  ``multiprocessing.Pool`` of ``cores`` processes, the same libraries and models, each
  process loading them once and taking whole documents.

Each is timed from its command's start to its exit (interpreter start, model loads and the
results file included: what a user waits for). ``pages_per_s`` is the folder's pages (the
documents that open) over that time; ``cpu_utilisation`` is the CPU time of the command and
every process under it (``RUSAGE_CHILDREN``: workers, Tesseract) over wall time x cores.
``ratio`` is docpipe's pages/s over the script's (the issue's target: >= 0.9). With
``--rounds`` > 1 each round runs the three in a rotated order and the best round counts.
The machine's load average is recorded before and after: other work on the machine falls
on the three alike only within a round.

Checked (a failed check exits 1): the three succeed and fail on the same documents (the
damaged sample only), and docpipe's document class and language agree with the script's
on every document.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
FLOW = ROOT / "flows" / "idp.json"
SCRIPT = ROOT / "benchmarks" / "idp_script.py"
DOCPIPE = str(Path(sys.executable).parent / "docpipe")
PASSWORD = "docpipe"  # samples/encrypted.pdf's user password
TARGET = 0.90
RUNS = ("docpipe", "docpipe_no_budget", "script")

sys.path.insert(0, str(ROOT / "benchmarks"))
from ocr_throughput import make_scanned_pdf, page_text  # noqa: E402


class CheckFailed(Exception):
    """A run produced wrong results; its figures must not be trusted."""


def make_long_pdf(path: Path, pages: int) -> None:
    """A text PDF of ``pages`` A4 pages of business prose (a long report)."""
    import random

    import pymupdf

    rng = random.Random(7)
    doc = pymupdf.open()
    for number in range(1, pages + 1):
        page = doc.new_page()
        page.insert_text((56, 70), f"Annual report, section {number}", fontsize=16, fontname="hebo")
        page.insert_textbox(pymupdf.Rect(56, 90, 539, 800), page_text(rng), fontsize=10, fontname="helv")
    doc.save(path, garbage=3, deflate=True)


def make_folder(folder: Path, copies: int, scans: int, scan_pages: int, long_pages: int) -> None:
    folder.mkdir(parents=True)
    for sample in sorted(SAMPLES.iterdir()):
        for i in range(copies):
            shutil.copy(sample, folder / f"{sample.stem}-{i}{sample.suffix}")
    for i in range(scans):
        make_scanned_pdf(folder / f"generated-scan-{i}.pdf", scan_pages, 300)
    if long_pages:
        make_long_pdf(folder / "long-report.pdf", long_pages)


def count_pages(folder: Path) -> tuple[int, int]:
    """(documents, pages of the documents that open)."""
    import pymupdf

    pymupdf.TOOLS.mupdf_display_errors(False)
    docs = pages = 0
    for p in folder.iterdir():
        docs += 1
        try:
            with pymupdf.open(p) as d:
                pages += d.page_count
        except Exception:  # noqa: BLE001, S112 - the damaged sample: no pages
            continue
    return docs, pages


def command(name: str, folder: Path, out: Path, work: Path) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "DOCPIPE_PDF_PASSWORD": PASSWORD}
    if name == "script":
        return [sys.executable, str(SCRIPT), str(folder), "--out", str(out)], env
    if name == "docpipe_no_budget":
        env["DOCPIPE_BUDGET"] = "0"
    return [DOCPIPE, "run", str(FLOW), str(folder), "-o", str(out), "-q",
            "--db", f"sqlite:///{work / 'runs.db'}"], env


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_one(name: str, folder: Path, tmp: Path, pages: int) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp))
    out = work / "rows.jsonl"
    argv, env = command(name, folder, out, work)
    cpu0, t0 = children_cpu(), time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=work, capture_output=True, text=True, timeout=3600)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if done.returncode not in (0, 1):  # 1: some documents failed (the damaged sample)
        raise CheckFailed(f"{name} exited {done.returncode}: {done.stderr[-2000:]}")
    rows = {}
    for line in out.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        rows[os.path.basename(row["document"])] = row
    cores = os.cpu_count() or 1
    figures = {"seconds": round(wall, 2), "pages_per_s": round(pages / wall, 3),
               "cpu_seconds": round(cpu, 1), "cpu_utilisation": round(cpu / (wall * cores), 3)}
    shutil.rmtree(work, ignore_errors=True)
    return figures, rows


def failed(rows: dict[str, dict[str, Any]]) -> set[str]:
    return {d for d, r in rows.items() if r.get("error") or r.get("status") == "failed"}


def check(name: str, rows: dict[str, dict[str, Any]], script: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """docpipe's rows against the script's: the same failures, the same class and language."""
    if rows.keys() != script.keys():
        raise CheckFailed(f"{name}: documents {sorted(rows.keys() ^ script.keys())} in one result only")
    if failed(rows) != failed(script):
        raise CheckFailed(f"{name} failed {sorted(failed(rows))}, the script {sorted(failed(script))}")
    ok = [d for d in rows if d not in failed(rows)]
    differ = [d for d in ok if (rows[d]["doc_class"], rows[d]["language"])
              != (script[d]["doc_class"], script[d]["language"])]
    if differ:
        raise CheckFailed(f"{name}: class or language differ from the script's on {differ}: "
                          + "; ".join(f"{d}: {rows[d]['doc_class']}/{rows[d]['language']} vs "
                                      f"{script[d]['doc_class']}/{script[d]['language']}" for d in differ[:5]))
    return {"documents": len(rows), "failed": sorted(failed(rows)), "agree": len(ok)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=4, help="copies of each sample")
    ap.add_argument("--scans", type=int, default=4, help="generated scanned PDFs")
    ap.add_argument("--scan-pages", type=int, default=2, help="pages of each generated scan")
    ap.add_argument("--long-pages", type=int, default=80, help="pages of the long text PDF (0: none)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--only", choices=RUNS, action="append", help="run only these (repeatable)")
    ap.add_argument("--json", action="store_true", help="only the JSON on stdout")
    args = ap.parse_args(argv)
    runs = [r for r in RUNS if not args.only or r in args.only]
    with tempfile.TemporaryDirectory(prefix="idp-throughput-") as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / "docs"
        make_folder(folder, args.copies, args.scans, args.scan_pages, args.long_pages)
        documents, pages = count_pages(folder)
        load_before = os.getloadavg()
        rounds: list[dict[str, dict[str, Any]]] = []
        checks: dict[str, Any] = {}
        for r in range(args.rounds):
            order = runs[r % len(runs):] + runs[:r % len(runs)]
            figures, rows = {}, {}
            for name in order:
                figures[name], rows[name] = run_one(name, folder, tmp, pages)
                if not args.json:
                    print(f"round {r + 1} {name}: {figures[name]}", file=sys.stderr)
            if "script" in rows:
                for name in rows:
                    if name != "script":
                        checks[name] = check(name, rows[name], rows["script"])
            rounds.append(figures)
        load_after = os.getloadavg()
    best = {name: min((rd[name] for rd in rounds), key=lambda f: f["seconds"]) for name in runs}
    report: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "load_before": [round(x, 2) for x in load_before],
                    "load_after": [round(x, 2) for x in load_after]},
        "folder": {"documents": documents, "pages": pages, "copies": args.copies, "scans": args.scans,
                   "scan_pages": args.scan_pages, "long_pages": args.long_pages},
        "results": best, "rounds": rounds, "checks": checks,
    }
    if "script" in best:
        base = best["script"]["pages_per_s"]
        report["ratio"] = {name: round(best[name]["pages_per_s"] / base, 3) for name in best if name != "script"}
        if "docpipe" in report["ratio"]:
            report["target"] = {"docpipe_over_script": TARGET, "met": report["ratio"]["docpipe"] >= TARGET}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CheckFailed as exc:
        print(f"check failed: {exc}", file=sys.stderr)
        sys.exit(1)
