"""Peak memory of a flow against the page count of one document (not a test).

Generates text PDFs of N pages (default 100 and 1,000) with PyMuPDF, runs a flow
(default ``flows/idp.json``) over each in a fresh process, and reports the peak
RSS of the engine process and of its largest worker (``ru_maxrss`` of the
process and of its reaped children). Peak RSS should not grow with the page
count beyond the text itself: pages are parsed one at a time, OCR renders one
page per task inside its worker and never holds more than that page's image.

    python benchmarks/memory_pages.py [--pages 100 1000] [--flow flows/idp.json]

Prints JSON: per page count, peak RSS (MiB) of the engine and of the largest
worker, seconds, and the ratio of the largest to the smallest page count.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE_TEXT = ("Page {n}. This agreement describes access control, encryption and incident "
             "response duties of the supplier (NIST AC-2, SOC 2 CC6.1). Northwind Office "
             "Supplies Ltd, Bristol, will review the audit log every quarter.")


def make_pdf(path: Path, pages: int) -> None:
    import pymupdf

    doc = pymupdf.open()
    for n in range(1, pages + 1):
        page = doc.new_page()
        page.insert_textbox(pymupdf.Rect(72, 72, 523, 770), PAGE_TEXT.format(n=n), fontsize=11)
    doc.save(path, garbage=3, deflate=True)


def measure(flow: str, pdf: str, db: str) -> dict[str, float]:
    """Run in a fresh process: the engine over one document; peak RSS of it and its workers."""
    from docpipe.engine import Engine
    from docpipe.planner import plan_file
    from docpipe.plugins import Registry
    from docpipe.store import Store

    plan = plan_file(flow, Registry())
    store = Store(db)
    t0 = time.perf_counter()
    with Engine(store, workers=2) as engine:
        result = engine.run(plan, [pdf])
    seconds = time.perf_counter() - t0
    store.close()
    if result.failed:
        raise SystemExit(f"the document failed: {result.failed[0].error}")
    kib = 1024  # ru_maxrss is in KiB on Linux
    return {
        "engine_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib,
        "largest_worker_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib,
        "seconds": round(seconds, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--flow", default=str(ROOT / "flows" / "idp.json"))
    parser.add_argument("--measure", nargs=3, metavar=("FLOW", "PDF", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return 0
    report: dict[str, object] = {"flow": args.flow, "runs": {}}
    runs: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pages in args.pages:
            pdf = Path(tmp) / f"doc-{pages}.pdf"
            make_pdf(pdf, pages)
            db = f"sqlite:///{tmp}/runs-{pages}.db"
            out = subprocess.run([sys.executable, __file__, "--measure", args.flow, str(pdf), db],
                                 capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                return 1
            runs[pages] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{pages:>6} pages: {runs[pages]}", file=sys.stderr)
    report["runs"] = runs
    small, large = min(runs), max(runs)
    report["ratio_largest_to_smallest"] = {
        key: round(runs[large][key] / runs[small][key], 3)
        for key in ("engine_peak_rss_mib", "largest_worker_peak_rss_mib")
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
