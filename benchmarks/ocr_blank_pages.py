"""Blank pages: pages/s of the OCR flow with ``ocr.tesseract``'s blank-page skip on and off.

    python benchmarks/ocr_blank_pages.py [--pages 300] [--after-pages 3000] [--workers N] [--json]

From issue 13: a 3,000-page PDF of blank pages was OCR'd at 2.1 pages/s (~24 min). This
runs ``plugins/docpipe-ocr/flows/ocr.json`` (``pdf.text`` -> map ``ocr.tesseract`` ->
``ocr.merge``) on an engine whose pools a one-page run started and set up first, over
PDFs made here:

* ``empty``: ``--pages`` pages on which nothing is drawn (what a PDF writer makes of a
  blank page);
* ``scanned``: ``--pages`` pages, each a 150 dpi greyscale scan of blank paper (grey
  paper, grain, a few specks of dust), as a scanner writes one;
* ``mixed``: ``--pages`` scanned pages of which every tenth holds a line of text
  (``PAGE n MARKER``): the text must still be found, in order.

Each is timed with ``skip_blank=false`` (before: Tesseract reads every page) and
``skip_blank=true`` (after). ``--after-pages`` more blank pages (default 3000, the
issue's figure) are timed after only; before is extrapolated from ``--pages`` (pages/s
does not depend on the page count once the pools are up) and said to be. Results are
checked (every page OCR'd or skipped as it should be, the text pages read); a failed
check exits 1. Ratios are what to compare across machines, not absolute figures.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "plugins" / "docpipe-ocr" / "flows" / "ocr.json"
ISSUE_PAGES = 3000


class CheckFailed(Exception):
    """A run gave wrong results: its figures must not be trusted."""


def make_pdf(path: Path, pages: int, kind: str) -> None:
    """``pages`` pages of ``kind`` (``empty``, ``scanned``, ``mixed``) in one PDF."""
    import numpy as np
    import pymupdf

    doc = pymupdf.open()
    if kind == "empty":
        for _ in range(pages):
            doc.new_page()
        doc.save(path)
        return
    rng = np.random.default_rng(13)
    width, height = 1240, 1754  # A4 at 150 dpi
    paper = np.clip(rng.normal(241, 4, (height, width)), 0, 255)
    for y, x in zip(rng.integers(0, height, 25), rng.integers(0, width, 25), strict=True):
        paper[y, x] = 60  # dust
    blank = pymupdf.Pixmap(pymupdf.csGRAY, width, height, paper.astype(np.uint8).tobytes(), False)
    blank_xref = 0
    for number in range(1, pages + 1):
        page = doc.new_page()
        if kind == "mixed" and number % 10 == 1:
            src = pymupdf.open()
            text_page = src.new_page()
            text_page.insert_text((60, 90), f"PAGE {number} MARKER", fontsize=16, fontname="hebo")
            text_page.insert_text((60, 120), "Received with thanks, the accounts office.", fontsize=11)
            page.insert_image(page.rect, stream=text_page.get_pixmap(dpi=150, colorspace=pymupdf.csGRAY)
                              .tobytes("png"))
        elif blank_xref:
            page.insert_image(page.rect, xref=blank_xref)  # one image object, drawn on every page
        else:
            blank_xref = page.insert_image(page.rect, pixmap=blank)
    doc.save(path, garbage=3, deflate=True)


class Runner:
    """The OCR flow on a warm engine, with ``ocr.tesseract``'s ``skip_blank`` set."""

    def __init__(self, skip_blank: bool, workers: int, dpi: int, warm_pdf: Path) -> None:
        from docpipe.engine import Engine
        from docpipe.planner import build_plan
        from docpipe.plugins import Registry

        definition = json.loads(FLOW.read_text(encoding="utf-8"))
        definition = copy.deepcopy(definition)
        for step in definition["steps"]:
            if step.get("block") == "ocr.tesseract":
                step.setdefault("params", {})["skip_blank"] = skip_blank
        definition["outputs"] = [*definition["outputs"], "ocr_blank"]
        self.plan = build_plan(definition, Registry(), params={"dpi": dpi}, base_dir=FLOW.parent)
        self.engine = Engine(None, workers=workers)
        self.engine.run(self.plan, [str(warm_pdf)])  # spawn the pools, set the blocks up

    def run(self, pdf: Path) -> tuple[float, dict[str, Any]]:
        from docpipe.engine import SUCCEEDED

        t0 = time.perf_counter()
        (doc,) = self.engine.run(self.plan, [str(pdf)]).results
        elapsed = time.perf_counter() - t0
        if doc.status != SUCCEEDED:
            raise CheckFailed(f"{pdf.name}: {doc.step}: {doc.error_kind}: {doc.error}")
        return elapsed, doc.outputs

    def close(self) -> None:
        self.engine.close()


def check(outputs: dict[str, Any], pages: int, kind: str, skip_blank: bool) -> int:
    """Every page went through the OCR step, blank ones skipped (when on), text pages read;
    returns how many pages were found blank."""
    what = f"{kind}, skip_blank={skip_blank}"
    if outputs["pages_ocrd"] != pages:
        raise CheckFailed(f"{what}: pages_ocrd={outputs['pages_ocrd']} for {pages} pages")
    blank = outputs["ocr_blank"]
    text_pages = [n for n in range(1, pages + 1) if kind == "mixed" and n % 10 == 1]
    expected = [False] * pages if not skip_blank else [n not in text_pages for n in range(1, pages + 1)]
    if blank != expected:
        wrong = [n for n, (b, e) in enumerate(zip(blank, expected, strict=True), 1) if b != e]
        raise CheckFailed(f"{what}: pages {wrong[:10]} blank={[blank[n - 1] for n in wrong[:10]]}")
    found = [int(n) for n in re.findall(r"PAGE\s+(\d+)\s+MARKER", outputs["full_text"])]
    if found != text_pages:
        raise CheckFailed(f"{what}: markers {found[:10]}... for text pages {text_pages[:10]}...")
    return sum(blank)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=300, help="pages of each PDF timed before and after")
    ap.add_argument("--after-pages", type=int, default=ISSUE_PAGES,
                    help="blank pages timed after only (0: none)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--dpi", type=int, default=300)
    ap.add_argument("--kinds", default="empty,scanned,mixed", help="which PDFs, comma-separated")
    ap.add_argument("--json", action="store_true", help="print only the JSON report")
    args = ap.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]

    def say(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    import pymupdf
    import pytesseract

    report: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "tesseract": str(pytesseract.get_tesseract_version()), "pymupdf": pymupdf.VersionBind},
        "pages": args.pages, "workers": args.workers, "dpi": args.dpi, "results": {}}
    try:
        with tempfile.TemporaryDirectory(prefix="docpipe-blank-bench-") as d:
            tmp = Path(d)
            make_pdf(tmp / "warm.pdf", 1, "mixed")
            pdfs = {}
            for kind in kinds:
                pdfs[kind] = tmp / f"{kind}.pdf"
                make_pdf(pdfs[kind], args.pages, kind)
            for skip_blank in (False, True):
                runner = Runner(skip_blank, args.workers, args.dpi, tmp / "warm.pdf")
                try:
                    for kind in kinds:
                        seconds, outputs = runner.run(pdfs[kind])
                        blank = check(outputs, args.pages, kind, skip_blank)
                        entry = report["results"].setdefault(kind, {})
                        entry["after" if skip_blank else "before"] = {
                            "seconds": round(seconds, 2), "pages_per_s": round(args.pages / seconds, 2),
                            "pages_found_blank": blank}
                        say(f"  {kind:<8} skip_blank={skip_blank!s:<5} {seconds:8.2f} s "
                            f"{args.pages / seconds:8.2f} pages/s, {blank} found blank")
                    if skip_blank and args.after_pages:
                        for kind in ("empty", "scanned"):
                            big = tmp / f"{kind}-{args.after_pages}.pdf"
                            make_pdf(big, args.after_pages, kind)
                            seconds, outputs = runner.run(big)
                            check(outputs, args.after_pages, kind, True)
                            report["results"].setdefault(kind, {})[f"after_{args.after_pages}"] = {
                                "seconds": round(seconds, 2),
                                "pages_per_s": round(args.after_pages / seconds, 2)}
                            say(f"  {kind:<8} {args.after_pages} pages, skip_blank=True {seconds:8.2f} s")
                finally:
                    runner.close()
    except CheckFailed as exc:
        print(f"ocr_blank_pages: CHECK FAILED: {exc}", file=sys.stderr)
        return 1

    for entry in report["results"].values():
        if "before" in entry and "after" in entry:
            entry["speedup"] = round(entry["after"]["pages_per_s"] / entry["before"]["pages_per_s"], 1)
            entry[f"before_{ISSUE_PAGES}_extrapolated_s"] = round(ISSUE_PAGES / entry["before"]["pages_per_s"])
    print(json.dumps(report, indent=2))
    for kind, entry in report["results"].items():
        line = f"{kind:<8}"
        if "speedup" in entry:
            line += (f" before {entry['before']['pages_per_s']:.2f} pages/s, after "
                     f"{entry['after']['pages_per_s']:.2f} pages/s: x{entry['speedup']}; {ISSUE_PAGES} pages "
                     f"before ~{entry[f'before_{ISSUE_PAGES}_extrapolated_s'] / 60:.1f} min (extrapolated)")
        if f"after_{args.after_pages}" in entry:
            line += (f"; {args.after_pages} pages after {entry[f'after_{args.after_pages}']['seconds']:.1f} s "
                     "(measured)")
        say(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
