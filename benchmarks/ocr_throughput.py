"""OCR throughput: pages/s of docpipe's OCR flow against a bare process pool and OCRmyPDF.

    python benchmarks/ocr_throughput.py [--pages 20] [--workers N] [--dpi 300] [--repeat R] [--json]

From the project issue: on a generated scanned PDF (``--pages`` A4 pages of dense text
rendered at ``--dpi``, image only), in one run, pages/s of

* ``docpipe``: ``plugins/docpipe-ocr/flows/ocr.json`` (``pdf.text`` -> map ``ocr.tesseract``
  -> ``ocr.merge``) on ``Engine(None, workers=N)``, its pools spawned and set up by a
  one-page run first; ``docpipe_recorded``: the same with a SQLite ``Store``;
  ``docpipe_cold``: a fresh engine per run, pool start-up timed.
* ``bare_pool``: a spawned ``multiprocessing`` pool of N processes with one Tesseract
  thread each (``OMP_THREAD_LIMIT=1``), warmed up, one task per page: render it with
  PyMuPDF in greyscale, ``pytesseract.image_to_data`` on the PIL image (handed to
  Tesseract as PNG, pytesseract's default). The issue's baseline: docpipe >= 90 % of it.
  ``bare_pool_bmp``: the same with the BMP hand-off ``ocr.tesseract`` uses, i.e. exactly
  the block's work: docpipe / this is the engine's own cost.
* ``ocrmypdf``: ``ocrmypdf --sidecar FILE -j N --output-type none``, when installed.

All but OCRmyPDF run in rounds, each once per round in a rotated order, so that other
load on the machine falls on all alike; best and median are reported, and each round's
ratio docpipe / bare_pool, whose median decides ``target.met``. ``worker_busy`` (bare
pools, recorded docpipe) is the share of the workers' time spent on pages: 1 minus what
the scheduler costs, whatever the load. Every result is checked (each page's text holds
its own ``PAGE n MARKER``, in page order for docpipe); a failed check exits 1. JSON on
stdout, a summary on stderr unless ``--json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "plugins" / "docpipe-ocr" / "flows" / "ocr.json"
TARGET = 0.90  # docpipe pages/s >= 90 % of the bare pool's
MEASUREMENTS = ("docpipe", "docpipe_recorded", "docpipe_cold", "bare_pool", "bare_pool_bmp", "ocrmypdf")

_WORDS = ("account agreement amount balance board budget capital contract customer delivery director "
          "equipment estimate finance invoice inventory ledger market meeting office order payment "
          "period policy price product profit project quarter receipt report revenue review sales "
          "schedule service shipment statement supplier summary tax total transfer warehouse approved "
          "pending quarterly monthly regional annual net gross expected current internal").split()


class CheckFailed(Exception):
    """A benchmark produced wrong results; its figures must not be trusted."""


class StoreBroken(Exception):
    """The store did not record the run: that measurement is reported as not made."""


def page_text(rng: random.Random) -> str:
    """About 350 words of invented business prose, a dense but ordinary page."""
    sentences = []
    for _ in range(38):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 12))]
        sentences.append(" ".join(words).capitalize() + f" {rng.randint(10, 9999)}.")
    return " ".join(sentences)


def make_scanned_pdf(path: Path, pages: int, dpi: int) -> None:
    """An image-only PDF: A4 pages of text rendered to greyscale images at ``dpi``, as a scanner
    would write it (no text layer)."""
    import pymupdf

    rng = random.Random(1234)
    scans = pymupdf.open()
    for number in range(1, pages + 1):
        src = pymupdf.open()
        page = src.new_page()  # A4
        page.insert_text((56, 70), f"PAGE {number} MARKER", fontsize=18, fontname="hebo")
        page.insert_textbox(pymupdf.Rect(56, 90, 539, 800), page_text(rng), fontsize=11, fontname="helv")
        pix = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
        out = scans.new_page(width=page.rect.width, height=page.rect.height)
        out.insert_image(out.rect, stream=pix.tobytes("png"))
    scans.save(path, garbage=3, deflate=True)


def check_pages(texts: list[str], pages: int, what: str) -> None:
    """Each text must be its page's: it holds that page's marker (OCR may misread a little)."""
    if len(texts) != pages:
        raise CheckFailed(f"{what}: {len(texts)} page texts for {pages} pages")
    for number, text in enumerate(texts, 1):
        found = re.findall(r"PAGE\s+(\d+)\s+MARKER", text)
        if found != [str(number)]:
            raise CheckFailed(f"{what}: text of page {number} holds markers {found}: {text[:120]!r}")


def rate(pages: int, seconds: list[float]) -> dict[str, Any]:
    best, median = min(seconds), statistics.median(seconds)
    return {"pages": pages, "seconds": round(best, 3), "pages_per_s": round(pages / best, 3),
            "median_seconds": round(median, 3), "median_pages_per_s": round(pages / median, 3),
            "all_seconds": [round(s, 3) for s in seconds]}


class DocpipeRunner:
    """Times the flow over the PDF on an engine.

    ``mode``: ``warm`` (one engine whose pools a one-page run spawned and set up before any
    timing: a long-lived engine's steady state), ``recorded`` (the same, recording every
    flow run and task run in the SQLite store ``db``) or ``cold`` (a fresh engine for every
    run: spawning both pools and their set-up are timed).
    """

    def __init__(self, pdf: Path, warm_pdf: Path, pages: int, workers: int, dpi: int,
                 mode: str = "warm", db: Path | None = None) -> None:
        from docpipe.planner import plan_file
        from docpipe.plugins import Registry

        self.pdf, self.pages, self.workers, self.mode, self.db = pdf, pages, workers, mode, db
        self.busy: list[float] = []
        self.plan = plan_file(FLOW, Registry(), params={"dpi": dpi})
        self.store: Any = None
        if mode == "recorded":
            from docpipe.store import Store

            self.store = Store(f"sqlite:///{db}")
        self.engine = None if mode == "cold" else self._engine()
        if self.engine is not None:
            check_docpipe(self.engine.run(self.plan, [str(warm_pdf)]), 1, f"docpipe ({mode}) warm-up")

    def _engine(self) -> Any:
        from docpipe.engine import Engine

        return Engine(self.store, workers=self.workers)

    def run(self) -> float:
        t0 = time.perf_counter()
        engine = self.engine or self._engine()
        try:
            result = engine.run(self.plan, [str(self.pdf)])  # flushes the store's writer
        finally:
            if self.engine is None:
                engine.close()
        elapsed = time.perf_counter() - t0
        check_docpipe(result, self.pages, f"docpipe ({self.mode})")
        if self.store is not None and self.db is not None:
            ocr_seconds = check_records(self.db, result.results[0].run_id, self.pages)
            self.busy.append(ocr_seconds / (self.workers * elapsed))
        return elapsed

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        if self.store is not None:
            self.store.close()


def check_docpipe(result: Any, pages: int, what: str) -> None:
    from docpipe.engine import SUCCEEDED

    (doc,) = result.results
    if doc.status != SUCCEEDED:
        raise CheckFailed(f"{what}: {doc.step}: {doc.error_kind}: {doc.error}")
    if doc.outputs.get("pages_ocrd") != pages:
        raise CheckFailed(f"{what}: pages_ocrd={doc.outputs.get('pages_ocrd')} for {pages} pages")
    full_text = doc.outputs["full_text"]
    # cut full_text before each marker, in the order they appear: page order is checked too
    starts = [m.start() for m in re.finditer(r"PAGE\s+\d+\s+MARKER", full_text)]
    texts = [full_text[a:b] for a, b in zip(starts, [*starts[1:], len(full_text)], strict=True)]
    check_pages(texts, pages, what)


def check_records(db: Path, run_id: str, pages: int) -> float:
    """The store holds the run's task records (text, one per page, the map step, merge);
    returns the seconds the workers spent on pages, from the records' start and end times."""
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT step, started_at, finished_at FROM task_runs "
                           "WHERE flow_run_id = ? AND status = 'succeeded'", (run_id,)).fetchall()
    except sqlite3.Error as exc:
        raise StoreBroken(f"cannot read the task records: {exc}") from exc
    finally:
        con.close()
    steps = {step for step, _, _ in rows}
    want = {"text", "ocr", "merge", *(f"ocr[{i}]" for i in range(pages))}
    if not want <= steps:
        raise StoreBroken(f"{len(want - steps)} of {len(want)} task records of the run are missing "
                          f"from the store (e.g. {sorted(want - steps)[:3]})")
    return sum(end - start for step, start, end in rows if step.startswith("ocr["))


def _init_worker() -> None:
    os.environ["OMP_THREAD_LIMIT"] = "1"  # one Tesseract thread per process
    import pymupdf  # noqa: F401 - imported once per worker, not per page
    import pytesseract  # noqa: F401


def _ocr_page(job: tuple[str, int, int, str]) -> tuple[int, str, float]:
    import pymupdf
    import pytesseract
    from PIL import Image

    path, number, dpi, handoff = job
    started = time.perf_counter()
    with pymupdf.open(path) as doc:
        pix = doc[number - 1].get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
    image = Image.frombytes("L", (pix.width, pix.height), pix.samples)
    if handoff == "bmp":
        image.format = "BMP"
    tsv = pytesseract.image_to_data(image, lang="eng", config="--psm 3")
    words = [row.split("\t")[-1] for row in tsv.splitlines()[1:] if row.startswith("5\t")]
    return number, " ".join(w for w in words if w.strip()), time.perf_counter() - started


class PoolRunner:
    """``workers`` spawned processes, started and warmed up before timing; one task per page."""

    def __init__(self, pdf: Path, pages: int, workers: int, dpi: int, handoff: str) -> None:
        self.pdf, self.pages, self.dpi, self.handoff = pdf, pages, dpi, handoff
        self.workers = workers
        self.busy: list[float] = []
        self.pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker)
        self.pool.map(_ocr_page, [(str(pdf), 1, 50, handoff)] * workers, chunksize=1)

    def run(self) -> float:
        jobs = [(str(self.pdf), n, self.dpi, self.handoff) for n in range(1, self.pages + 1)]
        t0 = time.perf_counter()
        done = {n: (text, busy) for n, text, busy in self.pool.imap_unordered(_ocr_page, jobs, chunksize=1)}
        elapsed = time.perf_counter() - t0
        check_pages([done[n][0] for n in sorted(done)], self.pages, f"bare pool ({self.handoff})")
        self.busy.append(sum(busy for _, busy in done.values()) / (self.workers * elapsed))
        return elapsed

    def close(self) -> None:
        self.pool.close()
        self.pool.join()


def bench_interleaved(runners: dict[str, Any], pages: int, repeat: int,
                      say: Any) -> dict[str, dict[str, Any]]:
    """Time every runner once per round, rotating the order each round."""
    names = list(runners)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    out: dict[str, dict[str, Any]] = {}
    for rnd in range(repeat):
        for name in names[rnd % len(names):] + names[:rnd % len(names)]:
            if name in out:
                continue  # its store is broken
            try:
                seconds[name].append(runners[name].run())
            except StoreBroken as exc:
                out[name] = {"skipped": f"the store did not record the run: {exc}"}
            say(f"  round {rnd + 1}: {name:<17} " + (out[name]["skipped"] if name in out
                                                       else f"{seconds[name][-1]:7.2f} s"))
    for name, secs in seconds.items():
        if name not in out:
            out[name] = rate(pages, secs)
            if runners[name].busy:
                out[name]["worker_busy"] = [round(b, 4) for b in runners[name].busy]
    return out


def bench_ocrmypdf(exe: str | None, pdf: Path, pages: int, workers: int, repeat: int,
                   tmp: Path) -> dict[str, Any]:
    exe = exe or shutil.which("ocrmypdf")
    if exe is None:
        return {"skipped": "ocrmypdf is not installed (pip install ocrmypdf, or --ocrmypdf PATH)"}
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    seconds, sidecar = [], tmp / "sidecar.txt"
    cmd = [exe, "--sidecar", str(sidecar), "-j", str(workers), "-l", "eng", "--output-type", "none",
           "--quiet", str(pdf), "-"]
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            return {"skipped": f"ocrmypdf failed (exit {proc.returncode}): {proc.stderr[-500:]}"}
        # OCRmyPDF separates pages with a form feed
        check_pages(sidecar.read_text(encoding="utf-8").split("\f")[:pages], pages, "ocrmypdf")
    shown = ["ocrmypdf", "--sidecar", "FILE", *cmd[3:-2], "IN.pdf", "-"]
    return {**rate(pages, seconds), "version": version, "command": " ".join(shown)}


def ratio(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """pages/s of ``a`` over pages/s of ``b``, best against best."""
    if "pages_per_s" not in a or "pages_per_s" not in b:
        return None
    return round(a["pages_per_s"] / b["pages_per_s"], 3)


def paired(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """The same ratio round by round (both ran in the same round, minutes apart at most), and
    its median: less at the mercy of other load on the machine than best against best."""
    if "all_seconds" not in a or "all_seconds" not in b:
        return None
    per = [round(tb / ta, 3) for ta, tb in zip(a["all_seconds"], b["all_seconds"], strict=True)]
    return {"per_round": per, "median": round(statistics.median(per), 3)}


def summary(report: dict[str, Any]) -> str:
    lines = [f"OCR throughput: {report['pages']} pages at {report['dpi']} dpi, "
             f"{report['workers']} workers on {report['machine']['cores']} cores"]
    for name in MEASUREMENTS:
        f = report[name]
        lines.append(f"  {name:<17} " + (f"skipped: {f['skipped']}" if "skipped" in f else
                     f"{f['pages_per_s']:6.3f} pages/s best, {f['median_pages_per_s']:6.3f} median"
                     + (f", workers busy {f['worker_busy']}" if "worker_busy" in f else "")))
    lines += [f"  {key:<37} {value}" for key, value in report["ratios"].items()]
    t = report["target"]
    lines.append(f"  target: docpipe >= {t['min_ratio']:.0%} of bare_pool (median of the rounds' "
                 f"ratios, {t['ratio']}): " + ("MET" if t["met"] else "MISSED"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=20, help="pages of the scanned PDF (>= 1)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: cores)")
    ap.add_argument("--dpi", type=int, default=300, help="scan and OCR resolution")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per measurement (best reported)")
    ap.add_argument("--ocrmypdf", help="the ocrmypdf executable (default: from PATH)")
    ap.add_argument("--skip", action="append", default=[],
                    choices=["cold", "recorded", "bmp", "ocrmypdf"], help="leave a measurement out")
    ap.add_argument("--json", action="store_true", help="print only the JSON report")
    args = ap.parse_args(argv)
    if args.pages < 1 or args.workers < 1 or args.repeat < 1:
        ap.error("--pages, --workers and --repeat must be >= 1")

    def say(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    runners: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="docpipe-ocr-bench-") as d:
            tmp = Path(d)
            pdf, warm_pdf = tmp / "scanned.pdf", tmp / "warm.pdf"
            say(f"generating a {args.pages}-page scanned PDF at {args.dpi} dpi ...")
            make_scanned_pdf(pdf, args.pages, args.dpi)
            make_scanned_pdf(warm_pdf, 1, 100)
            import pymupdf
            import pytesseract

            machine = {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                       "tesseract": str(pytesseract.get_tesseract_version()), "pymupdf": pymupdf.VersionBind}
            report: dict[str, Any] = {"machine": machine, "pages": args.pages, "dpi": args.dpi,
                                      "workers": args.workers, "repeat": args.repeat,
                                      **{name: {"skipped": "--skip"} for name in MEASUREMENTS}}
            say("starting and warming up the pools and engines ...")
            try:
                runners["bare_pool"] = PoolRunner(pdf, args.pages, args.workers, args.dpi, "png")
                common = (pdf, warm_pdf, args.pages, args.workers, args.dpi)
                runners["docpipe"] = DocpipeRunner(*common)
                if "bmp" not in args.skip:
                    runners["bare_pool_bmp"] = PoolRunner(pdf, args.pages, args.workers, args.dpi, "bmp")
                if "recorded" not in args.skip:
                    runners["docpipe_recorded"] = DocpipeRunner(*common, "recorded", tmp / "docpipe.db")
                if "cold" not in args.skip:
                    runners["docpipe_cold"] = DocpipeRunner(*common, "cold")
                say(f"timing {', '.join(runners)} ({args.repeat} round(s), order rotated) ...")
                report.update(bench_interleaved(runners, args.pages, args.repeat, say))
            finally:
                for runner in runners.values():
                    runner.close()
            if "ocrmypdf" not in args.skip:
                say("ocrmypdf ...")
                report["ocrmypdf"] = bench_ocrmypdf(args.ocrmypdf, pdf, args.pages, args.workers,
                                                    args.repeat, tmp)
    except CheckFailed as exc:
        print(f"ocr_throughput: CHECK FAILED: {exc}", file=sys.stderr)
        return 1

    pairs = [("docpipe", "bare_pool"), ("docpipe", "bare_pool_bmp"), ("docpipe_recorded", "bare_pool"),
             ("docpipe_cold", "bare_pool"), ("docpipe", "ocrmypdf")]
    report["ratios"] = {f"{a}_vs_{b}": ratio(report[a], report[b]) for a, b in pairs}
    for a, b in [("docpipe", "bare_pool"), ("docpipe", "bare_pool_bmp"), ("docpipe_recorded", "docpipe")]:
        report["ratios"][f"{a}_vs_{b}_by_round"] = paired(report[a], report[b])
    by_round = report["ratios"]["docpipe_vs_bare_pool_by_round"]
    report["target"] = {"min_ratio": TARGET, "ratio": by_round["median"],
                        "met": by_round["median"] >= TARGET}
    print(json.dumps(report, indent=2))
    say(summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
