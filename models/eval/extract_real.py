"""Rebuild ``models/eval/real_docs.jsonl`` (the real-document evaluation set) from the PDFs
that Debian's TeX Live documentation packages install. Not part of ``make models``: the
extracted text is committed, so evaluating needs none of these packages.

    apt-get install texlive-latex-extra-doc texlive-publishers-doc libtasn1-doc
    python models/eval/extract_real.py

Each document's text is what docpipe's own ``pdf.text`` reads from it (every page, joined),
cut to its first ``KEEP`` characters: ``hf.classify`` sees about the first 1,000-1,500.
Labels were given by reading each document, not by running a model; ``LABELS`` below is
the list, with a note where the call was not obvious. Licences are those Debian's
``/usr/share/doc/texlive-*-doc/Licenses.gz`` lists for the CTAN package.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = HERE / "real_docs.jsonl"
TEX = Path("/usr/share/doc/texlive-doc/latex")
KEEP = 4000

#: (label, language, path under TEX or absolute, note). ``other``: none of the ten types.
LABELS: list[tuple[str, str, str, str]] = [
    ("invoice", "en", "invoice-class/doc/duck-invoice.pdf", "commercial invoice with waybill"),
    ("invoice", "en", "simpleinvoice/doc/examples/english.pdf", ""),
    ("invoice", "no", "simpleinvoice/doc/examples/norwegian.pdf", "Norwegian (faktura)"),
    ("cv", "en", "cv/CVCTAN.pdf", ""),
    ("cv", "en", "cv4tw/sample-jules-verne-simple.pdf", "infographic-style CV, French quote"),
    ("cv", "en", "ecv/template/CV-template_en.pdf", "blank template with <placeholders>"),
    ("cv", "en", "europasscv/example/europasscv_en.pdf", ""),
    ("cv", "en", "europecv/templates/cv_template_en.pdf", "template, '(Remove if not relevant)'"),
    ("cv", "en", "harnon-cv/sample.pdf", ""),
    ("cv", "en", "komacv/examples/komacv_example_classic.pdf", ""),
    ("cv", "fr", "pas-cv/examples/cv-orion.pdf", "French"),
    ("cv", "en", "simplecv/testcv.pdf", ""),
    ("cv", "en", "tucv/tucv_ex.pdf", "'Sample Resume'"),
    ("cv", "fr", "esieecv/cvtest.pdf", "French"),
    ("letter", "en", "cv/ApplicationLetter.pdf", "job application letter"),
    ("letter", "en", "topletter/ExampleLetter.pdf", "letterhead, lorem-ipsum body"),
    ("letter", "de", "g-brief/beispiel.pdf", "German registered letter about unpaid rent"),
    ("letter", "en", "uantwerpendocs/uantwerpenletter-example.pdf", ""),
    ("letter", "de", "bfh-ci/DEMO-BFHLetter.pdf", "German letterhead, short"),
    ("form", "en", "diabetes-logbook/dmlb-template.pdf", "blank logbook to fill in by hand"),
    ("scientific_article", "en", "acmart/samples/sample-sigconf.pdf", ""),
    ("scientific_article", "en", "revtex4-1/sample/aps/apssamp.pdf", ""),
    ("scientific_article", "en", "apa7/samples/shortsample.pdf", ""),
    ("scientific_article", "en", "quantumarticle/quantum-template.pdf", ""),
    ("scientific_article", "en", "aastex/sample631.pdf", ""),
    ("scientific_article", "en", "elsarticle/elstest-1p.pdf", ""),
    ("scientific_article", "en", "jmlr/pmlr-sample.pdf", ""),
    ("scientific_article", "en",
     "authorarchive/examples/brucker-authorarchive-2016-IEEEtran.pdf", "author's version note first"),
    ("scientific_article", "pt", "abntex2/examples/abntex2-modelo-artigo.pdf", "Portuguese"),
    ("manual", "en", "/usr/share/doc/libtasn1-doc/libtasn1.pdf", "GNU library manual"),
    ("manual", "en", "moderncv/manual/moderncv_userguide.pdf", "about CVs: a hard case"),
    ("manual", "en", "exam/examdoc.pdf", ""),
    ("manual", "en", "invoice/invoice.pdf", "about invoices: a hard case"),
    ("manual", "en", "invoice-class/doc/invoice-class.pdf", "about invoices: a hard case"),
    ("manual", "en", "formular/formular.pdf", "about forms: a hard case"),
    ("manual", "en", "akletter/lettereng.pdf", "about letters: a hard case"),
    ("manual", "en", "ticket/manual.pdf", ""),
    ("manual", "en", "europecv/europecv.pdf", "about CVs: a hard case"),
    ("other", "de", "bankstatement/bankstatement-example.pdf", "bank statement (Kontoauszug)"),
    ("other", "en", "flowfram/samples/sample-news.pdf", "newspaper front page"),
    ("other", "en", "flowfram/samples/sample-brochure.pdf", "brochure"),
    ("other", "en", "recipebook/LongSample.pdf", "recipe book"),
    ("other", "en", "meetingmins/samples/minutes.pdf", "meeting minutes"),
    ("other", "en", "meetingmins/samples/agenda.pdf", "meeting agenda"),
    ("other", "nl", "uantwerpendocs/uantwerpenreport-example.pdf", "research report, Dutch"),
    ("other", "nl", "uantwerpendocs/uantwerpenexam-example1.pdf", "exam paper, Dutch"),
    ("other", "en", "mathexam/sample.pdf", "exam paper with answer blanks"),
    ("other", "en", "tcolorbox/tcolorbox-example-poster.pdf", "conference poster"),
    ("other", "en", "bookcover/bookcover-example1.pdf", "book dust jacket"),
    ("other", "en", "beamertheme-saintpetersburg/example.pdf", "slides"),
    ("other", "en", "unicodefonttable/unicodefonttable-samples.pdf", "font tables"),
    ("other", "en", "chronology/example.pdf", "timeline drawing, almost no text"),
    ("other", "en", "brandeis-problemset/example.pdf", "homework problem set"),
    ("other", "nl", "uantwerpendocs/uantwerpencoursetext-example.pdf", "course notes, Dutch"),
]


def licences() -> dict[str, str]:
    """CTAN package -> licence, from Debian's TeX Live ``Licenses.gz`` files."""
    out: dict[str, str] = {}
    for path in Path("/usr/share/doc").glob("texlive-*-doc/Licenses.gz"):
        for line in gzip.open(path, "rt", encoding="utf-8"):
            name, sep, rest = line.partition(": ")
            if sep and " " not in name and not line.startswith(("texmf", " ")):
                out.setdefault(name, rest.strip())
    return out


def main() -> int:
    sys.path.insert(0, str(ROOT / "plugins" / "docpipe-pdf"))
    from docpipe_pdf.text import PdfText, read_document

    known = licences()
    rows = []
    for label, lang, rel, note in LABELS:
        path = Path(rel) if rel.startswith("/") else TEX / rel
        doc = read_document(str(path), PdfText.Params())
        if path.is_relative_to(TEX):
            package = rel.split("/")[0]
            source = f"Debian texlive doc package, CTAN package {package}: {rel}"
            licence = known[package]
        else:
            source = f"Debian package libtasn1-doc: {path}"
            licence = "GFDL-1.3+ (manual of GNU Libtasn1)"
        folder = rel.split("/")[0] if path.is_relative_to(TEX) else path.parent.name
        rows.append({"id": f"{folder}-{path.stem}", "label": label, "lang": lang, "pages": doc["page_count"],
                     "source": source, "licence": licence, "note": note,
                     "text": doc["text"][:KEEP]})
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate ids"
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"extract_real: {len(rows)} documents -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
