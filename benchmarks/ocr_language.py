"""OCR in the page's own language: character error rate and time, fixed ``eng`` vs routed.

    python benchmarks/ocr_language.py [--pages 2] [--languages eng,fra,deu] [--json]

Runs ``ocr.tesseract`` (in this process, as one worker of its pool runs it: one Tesseract
thread, ``OMP_THREAD_LIMIT=1``) over scans of real English, French and German text, with

* ``eng``: ``languages: "eng"``, what flows/idp.json did before (the default);
* ``routed``: ``languages: "auto"``: a first pass over a band of the page picks the pack
  among ``eng+deu+fra+spa`` (``docpipe_ocr.route``), then the page is read with it;
* ``right pack``: the page's own pack given by hand (what routing should match).

and reports, per language, the character error rate (CER: Levenshtein edit distance between
the OCR text and the ground truth, over the ground truth's length, both with whitespace
runs collapsed to one space; computed here with numpy), the seconds per page of each, and
the routing pass alone (the band's OCR and the stopword count) against the full OCR.

Ground truth: the Vim tutor, as the Debian package ``vim-runtime`` installs it
(``/usr/share/vim/vim90/tutor/tutor``, ``tutor.fr.utf-8``, ``tutor.de.utf-8``,
``tutor.es.utf-8``), real prose written and translated by others: the English tutor by
Michael C. Pierce and Robert K. Ware, the French translation by Adrien Beau and
Dominique Pellé, the German by Joachim Hofmann. Licence: the Vim licence, a GPL-compatible
charityware licence that allows copying and distributing parts of Vim
(``/usr/share/doc/vim-runtime/copyright``). Lines that are only rules or arrows (``=``,
``~``, ``^``...) are dropped, the rest joined by spaces, and each page takes
``--chars`` characters of it from its own offset, cut at a space.

Pages are made as a scanner would give them: the text set in DejaVu Serif 11 pt on an A4
PDF page (PyMuPDF), rendered at 300 dpi in grey, rotated by a small angle (+-0.4-0.8
degrees), blurred (Gaussian, radius 0.7 px), given sensor noise (sigma 6 grey levels) and
saved as JPEG (quality 70) inside an image-only PDF. Everything is seeded: two runs make the
same pages.

A failed check (a page that gave no text, or a routed page read with none of the candidate
packs) exits 1.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TUTOR = Path("/usr/share/vim/vim90/tutor")
#: Tesseract pack -> the Vim tutor file in that language
SOURCES = {"eng": "tutor", "fra": "tutor.fr.utf-8", "deu": "tutor.de.utf-8", "spa": "tutor.es.utf-8"}
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf")
DPI = 300


class CheckFailed(Exception):
    """A run gave wrong results: its figures must not be trusted."""


def prose(language: str) -> str:
    """The Vim tutor in ``language`` as one line of prose (rules and arrows dropped)."""
    path = TUTOR / SOURCES[language]
    if not path.is_file():
        raise SystemExit(f"ocr_language: {path} is missing: apt-get install vim-runtime")
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped and not set(stripped) <= set("=~-*^<>|_"):
            kept.append(stripped)
    return " ".join(" ".join(kept).split())


def page_texts(language: str, pages: int, chars: int) -> list[str]:
    """``pages`` pieces of about ``chars`` characters of the tutor, each from its own part."""
    text = prose(language)
    step = (len(text) - chars) // max(1, pages)
    out = []
    for i in range(pages):
        start = text.find(" ", i * step) + 1
        end = text.rfind(" ", start, start + chars)
        out.append(text[start:end])
    return out


def scan_pdf(path: Path, text: str, seed: int) -> None:
    """A one-page image-only PDF: ``text`` set on A4, rendered and degraded like a scan."""
    import numpy as np
    import pymupdf
    from PIL import Image, ImageFilter

    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    left = page.insert_textbox(pymupdf.Rect(60, 60, 535, 790), text, fontsize=11,
                               fontfile=str(FONT), fontname="dejavuserif")
    if left < 0:
        raise CheckFailed(f"the text does not fit on the page ({len(text)} characters)")
    pix = page.get_pixmap(dpi=DPI, colorspace=pymupdf.csGRAY)
    rng = np.random.default_rng(seed)
    image = Image.frombytes("L", (pix.width, pix.height), pix.samples)
    angle = float(rng.choice([-1, 1]) * rng.uniform(0.4, 0.8))
    image = image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=255)
    image = image.filter(ImageFilter.GaussianBlur(0.7))
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, (image.height, image.width))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    jpeg = io.BytesIO()
    image.save(jpeg, format="JPEG", quality=70)
    out = pymupdf.open()
    scanned = out.new_page(width=595, height=842)
    scanned.insert_image(scanned.rect, stream=jpeg.getvalue())
    out.save(path)


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character each), by rows
    of the dynamic programme in numpy: the insertions along a row are a running minimum."""
    import numpy as np

    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    bs = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    steps = np.arange(len(bs) + 1)
    row = steps.copy()
    for i, char in enumerate(a, start=1):
        cost = (bs != ord(char)).astype(np.int64)
        new = np.empty_like(row)
        new[0] = i
        new[1:] = np.minimum(row[1:] + 1, row[:-1] + cost)
        row = np.minimum.accumulate(new - steps) + steps
    return int(row[-1])


def cer(ocr: str, truth: str) -> float:
    """Character error rate of ``ocr`` against ``truth``, whitespace runs as one space."""
    ocr, truth = " ".join(ocr.split()), " ".join(truth.split())
    return levenshtein(ocr, truth) / max(1, len(truth))


def run(pages: int, chars: int, languages: list[str]) -> dict[str, Any]:
    os.environ["OMP_THREAD_LIMIT"] = "1"  # as every ocr.tesseract worker has it
    from docpipe_ocr.tesseract import TesseractOcr

    block = TesseractOcr()
    ways = {"eng": {"languages": "eng"}, "routed": {"languages": "auto"}}
    block.setup(TesseractOcr.Params(languages="auto"))
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n, language in enumerate(languages):
            truths = page_texts(language, pages, chars)
            row: dict[str, Any] = {"pages": pages, "characters": sum(len(t) for t in truths),
                                   "chosen": []}
            for way in (*ways, "right pack"):
                row[way] = {"cer": [], "seconds": []}
            row["route"] = {"seconds": []}
            for i, truth in enumerate(truths):
                path = Path(tmp) / f"{language}-{i}.pdf"
                scan_pdf(path, truth, seed=100 * n + i)
                for way, params in (*ways.items(), ("right pack", {"languages": language})):
                    p = TesseractOcr.Params(**params)
                    started = time.perf_counter()
                    (result,) = block.run([{"path": str(path), "page": 1}], p)
                    seconds = time.perf_counter() - started
                    if not isinstance(result, dict) or not result["ocr_text"]:
                        raise CheckFailed(f"{language} page {i + 1}, {way}: no text ({result!r})")
                    row[way]["cer"].append(cer(result["ocr_text"], truth))
                    row[way]["seconds"].append(seconds)
                    if way == "routed":
                        if not set(result["ocr_language"].split("+")) <= set(SOURCES):
                            raise CheckFailed(f"routed to {result['ocr_language']!r}")
                        row["chosen"].append(result["ocr_language"])
                row["route"]["seconds"].append(route_seconds(path))
            rows[language] = row
    return {"rows": rows, "pages_per_language": pages, "chars_per_page": chars,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"}


def route_seconds(path: Path) -> float:
    """Seconds of the routing pass alone on the page at ``path``: band, first-pass OCR, guess."""
    import pymupdf
    from docpipe_ocr.route import PROBE_CONFIG, guess, probe_band
    from docpipe_ocr.tesseract import tesseract_tsv, text_and_confidence
    from PIL import Image

    with pymupdf.open(path) as doc:
        pix = doc[0].get_pixmap(dpi=DPI, colorspace=pymupdf.csGRAY)
    image = Image.frombytes("L", (pix.width, pix.height), pix.samples)
    started = time.perf_counter()
    band, band_dpi = probe_band(image, DPI)
    band.format = "BMP"
    tsv = tesseract_tsv(band, "eng", f"{PROBE_CONFIG} --dpi {round(band_dpi)}", 1, 60)
    guess(text_and_confidence(tsv)[0], ["eng", "deu", "fra", "spa"])
    return time.perf_counter() - started


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def report(result: dict[str, Any]) -> str:
    lines = [f"ocr_language: {result['pages_per_language']} page(s) per language, "
             f"~{result['chars_per_page']} characters each, 300 dpi scans; {result['machine']}",
             "",
             "| language | CER eng | CER routed | CER right pack | routed to | s/page eng | "
             "s/page routed | routing pass s/page |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for language, row in result["rows"].items():
        chosen = ", ".join(sorted(set(row["chosen"])))
        lines.append(
            f"| {language} | {mean(row['eng']['cer']):.2%} | {mean(row['routed']['cer']):.2%} | "
            f"{mean(row['right pack']['cer']):.2%} | {chosen} | {mean(row['eng']['seconds']):.2f} | "
            f"{mean(row['routed']['seconds']):.2f} | {mean(row['route']['seconds']):.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=2, help="pages per language (default 2)")
    parser.add_argument("--chars", type=int, default=2200, help="characters per page (default 2200)")
    parser.add_argument("--languages", default="eng,fra,deu", help="of eng, fra, deu, spa (default eng,fra,deu)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    languages = args.languages.split(",")
    if not set(languages) <= set(SOURCES):
        parser.error(f"--languages: of {', '.join(SOURCES)}")
    try:
        result = run(args.pages, args.chars, languages)
    except CheckFailed as exc:
        print(f"ocr_language: CHECK FAILED: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
