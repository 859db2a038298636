"""Rebuild ``models/data/doctype_real.jsonl`` (real documents to train on) and
``models/eval/frozen_docs.jsonl`` (a second real-document test set, kept apart).

Not part of ``make models``: the extracted text is committed, so building needs none of the
packages below. Run it on Debian 12 (bookworm) with them installed (or unpacked with
``apt-get download`` + ``dpkg-deb -x`` under ``--root``):

    apt-get install texlive-latex-extra-doc texlive-latex-recommended-doc \\
        texlive-lang-german texlive-lang-french nodejs zstd
    python models/data/assemble_real.py [--root /]

Every row names its source file and its licence: for TeX Live documentation, the CTAN
package's licence as Debian's ``Licenses.gz`` lists it; for the other files, the licence of
the project they come from. Labels were given by reading each document, not by running a
model. The text is what docpipe's ``pdf.text`` reads from a PDF (every page, joined) or the
file itself for Markdown and plain text, cut to its first ``KEEP`` characters
(``hf.classify`` sees about the first 1,000-1,500 of them).

Separation, checked when the script runs:

* no CTAN package (nor other source project) gives documents to more than one of the three
  sets: the training rows here, the frozen test set here, and ``models/eval/real_docs.jsonl``
  (the first real-document set, which was looked at while this data was chosen);
* nothing comes from the test resources of any package, nor from docpipe's ``samples/``.

The frozen set (``FROZEN``) was chosen and labelled before any model was trained on the
training rows, and was run once, at the end (``python models/eval_real.py --data
models/eval/frozen_docs.jsonl``); see the model card.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TRAIN_OUT = HERE / "doctype_real.jsonl"
FROZEN_OUT = ROOT / "models" / "eval" / "frozen_docs.jsonl"
TEX = "usr/share/doc/texlive-doc"
KEEP = 3000
FROZEN_KEEP = 4000
GSUTIL = "/usr/lib/google-cloud-sdk/platform/gsutil/third_party"
LICENSES = "usr/share/common-licenses"

#: files outside TeX Live: path -> (licence, what it is)
PROJECTS: dict[str, tuple[str, str]] = {
    "usr/share/doc/nodejs/": ("MIT (Node.js)", "Node.js"),
    "usr/share/doc/zstd/": ("BSD-3-Clause (zstd)", "zstd"),
    f"{GSUTIL}/httplib2/": ("MIT (httplib2)", "httplib2"),
    f"{GSUTIL}/idna/": ("BSD-3-Clause (idna)", "idna"),
    f"{GSUTIL}/cachetools/": ("MIT (cachetools)", "cachetools"),
    f"{GSUTIL}/argcomplete/": ("Apache-2.0 (argcomplete)", "argcomplete"),
    f"{GSUTIL}/pyparsing/": ("MIT (pyparsing)", "pyparsing"),
    f"{GSUTIL}/charset_normalizer/": ("MIT (charset-normalizer)", "charset-normalizer"),
    f"{GSUTIL}/google-auth-library-python/": ("Apache-2.0 (google-auth)", "google-auth"),
    f"{GSUTIL}/requests/": ("Apache-2.0 (requests)", "requests"),
    f"{GSUTIL}/urllib3/": ("MIT (urllib3)", "urllib3"),
    f"{GSUTIL}/certifi/": ("MPL-2.0 (certifi)", "certifi"),
    f"{LICENSES}/Apache-2.0": ("verbatim copying permitted (licence text)", "Apache-2.0"),
    f"{LICENSES}/GPL-3": ("verbatim copying permitted (licence text)", "GPL-3"),
    f"{LICENSES}/LGPL-2.1": ("verbatim copying permitted (licence text)", "LGPL-2.1"),
    f"{LICENSES}/MPL-2.0": ("verbatim copying permitted (licence text)", "MPL-2.0"),
    f"{LICENSES}/Artistic": ("verbatim copying permitted (licence text)", "Artistic"),
    f"{LICENSES}/MPL-1.1": ("verbatim copying permitted (licence text)", "MPL-1.1"),
    f"{LICENSES}/GFDL-1.3": ("verbatim copying permitted (licence text)", "GFDL-1.3"),
}

LICENCE_NOTE = "software licence terms: of the ten types, closest to a contract"
CONTRIBUTOR_COVENANT = "code of conduct (Contributor Covenant)"

#: (label, language, path relative to --root; TeX Live docs relative to TEX, note)
TRAIN: list[tuple[str, str, str, str]] = [
    # CVs
    ("cv", "de", "latex/classicthesis/Examples/classicthesis-cv.pdf", "German CV"),
    ("cv", "en", "latex/limecv/examples/mwe-lualatex.pdf", "lorem-ipsum CV"),
    ("cv", "nl", "latex/limecv/examples/mwe-latex.pdf", "Dutch headings"),
    ("cv", "en", "xelatex/resumecls/example/resume-en.pdf", "template with placeholders"),
    ("cv", "de", "latex/translation-europecv-de/templates/cv_template_de.pdf", "template"),
    ("cv", "it", "latex/translation-europecv-de/templates/cv_template_it.pdf", "template, Italian"),
    # letters
    ("letter", "de", "latex/koma-script-examples/Kapitel-4/result/letter-5.pdf", ""),
    ("letter", "de", "latex/koma-script-examples/Kapitel-4/result/letter-13.pdf", ""),
    ("letter", "de", "latex/koma-script-examples/Kapitel-4/result/letter-23.pdf", ""),
    ("letter", "de", "latex/koma-script-examples/Anhang-C/result/briefSN.pdf", ""),
    ("letter", "de", "latex/ntgclass/brief-sample.pdf", "Dutch/German sample letter"),
    ("letter", "en", "latex/makelabels/makelabels-example.pdf", "letters with address labels"),
    ("letter", "de", "latex/scrlttr2copy/letter-copy-test.pdf", "letter with its copy"),
    ("letter", "de", "latex/tuda-ci/DEMO-TUDaLetter.pdf", "university letterhead"),
    ("letter", "de", "latex/proposal/dfg/report/letter_submission.pdf", "cover letter"),
    # invoices
    ("invoice", "fr", "xelatex/facture/exemple.pdf", "French invoice"),
    ("invoice", "fr", "xelatex/facture/exemplesansTVA.pdf", "French invoice without VAT"),
    ("invoice", "fr", "latex/modeles-factures-belges-assocs/facture-basique.pdf", "Belgian"),
    ("invoice", "fr", "latex/modeles-factures-belges-assocs/facture-banlieues.pdf", "Belgian"),
    # forms
    ("form", "en", "latex/jslectureplanner/examples/English/presencetable-blank-english.pdf",
     "attendance sheet to sign"),
    ("form", "de", "latex/jslectureplanner/examples/German/membertable-blank.pdf",
     "participant list to fill in"),
    ("form", "de", "latex/milog/milog-formular.pdf", "working-time record form, blank"),
    # scientific articles
    ("scientific_article", "en", "latex/achemso/achemso-demo.pdf", ""),
    ("scientific_article", "en", "latex/afparticle/afpsample.pdf", ""),
    ("scientific_article", "en", "latex/aiaa/template_basic.pdf", "conference paper template"),
    ("scientific_article", "en", "latex/asmeconf/asmeconf-template.pdf", ""),
    ("scientific_article", "en", "latex/cmpj/template.pdf", ""),
    ("scientific_article", "en", "latex/confproc/example/papers/p_003.pdf", ""),
    ("scientific_article", "en", "latex/ejpecp/sample.pdf", ""),
    ("scientific_article", "en", "latex/emulateapj/sample.pdf", ""),
    ("scientific_article", "en", "latex/nwejm/examples/sample.pdf", ""),
    ("scientific_article", "en", "latex/oup-authoring-template/oup-authoring-template.pdf", ""),
    ("scientific_article", "en", "latex/resphilosophica/rpsample.pdf", ""),
    # manuals: package documentation, a few of them about the document types (hard cases)
    ("manual", "en", "latex/currvita/currvita.pdf", "about CVs"),
    ("manual", "en", "xelatex/resumecls/resumecls.pdf", "about CVs"),
    ("manual", "en", "latex/limecv/limecv.pdf", "about CVs"),
    ("manual", "de", "latex/bewerbung/bewerbung.pdf", "about job applications"),
    ("manual", "en", "latex/dinbrief/dinbrief.pdf", "about letters"),
    ("manual", "fr", "xelatex/facture/facture.pdf", "about invoices, French"),
    ("manual", "fr", "latex/modeles-factures-belges-assocs/doc-modeles-factures-belges-assocs.pdf",
     "about invoices, French"),
    ("manual", "en", "latex/uwa-pcf/uwa-pcf.pdf", "about consent forms"),
    ("manual", "en", "latex/sf298/sf298.pdf", "about a report form"),
    ("manual", "en", "latex/jslectureplanner/jslectureplanner.pdf", ""),
    ("manual", "en", "latex/abspos/abspos.pdf", ""),
    ("manual", "en", "latex/axessibility/axessibility.pdf", ""),
    ("manual", "en", "latex/cd/cd.pdf", ""),
    ("manual", "en", "latex/contour/contour.pdf", ""),
    ("manual", "en", "latex/doctools/doctools.pdf", ""),
    ("manual", "en", "latex/environ/environ.pdf", ""),
    ("manual", "en", "latex/fgruler/fgruler.pdf", ""),
    ("manual", "en", "latex/gitinfo/gitinfo.pdf", ""),
    ("manual", "en", "latex/icsv/icsv.pdf", ""),
    ("manual", "en", "latex/lambdax/lambdax.pdf", ""),
    ("manual", "en", "latex/mailing/mailing.pdf", ""),
    ("manual", "en", "latex/mnotes/mnotes.pdf", ""),
    ("manual", "en", "latex/ninecolors/ninecolors.pdf", ""),
    ("manual", "en", "latex/pbox/pbox.pdf", ""),
    ("manual", "en", "latex/protocol/protocol.pdf", ""),
    ("manual", "en", "latex/sseq/sseq.pdf", ""),
    ("manual", "en", "latex/texments/texments.pdf", ""),
    ("manual", "en", "latex/xcookybooky/xcookybooky.pdf", ""),
    # policies
    ("policy", "en", "usr/share/doc/nodejs/SECURITY.md", "security policy"),
    ("policy", "en", f"{GSUTIL}/httplib2/SECURITY.md", "security policy"),
    ("policy", "en", f"{GSUTIL}/idna/SECURITY.md", "security policy"),
    ("policy", "en", f"{GSUTIL}/argcomplete/SECURITY.md", "security policy"),
    ("policy", "en", f"{GSUTIL}/pyparsing/.github/SECURITY.md", "security policy"),
    ("policy", "en", f"{GSUTIL}/charset_normalizer/CODE_OF_CONDUCT.md", CONTRIBUTOR_COVENANT),
    ("policy", "en", f"{GSUTIL}/google-auth-library-python/CODE_OF_CONDUCT.md",
     "code of conduct"),
    ("policy", "en", "usr/share/doc/zstd/CODE_OF_CONDUCT.md", "code of conduct, short"),
    # contracts
    ("contract", "en", f"{LICENSES}/Apache-2.0", LICENCE_NOTE),
    ("contract", "en", f"{LICENSES}/GPL-3", LICENCE_NOTE),
    ("contract", "en", f"{LICENSES}/LGPL-2.1", LICENCE_NOTE),
    ("contract", "en", f"{LICENSES}/MPL-2.0", LICENCE_NOTE),
    # none of the ten types
    ("other", "en", "latex/beamertheme-focus/focus-demo.pdf", "slides"),
    ("other", "en", "latex/beamertheme-metropolis/demo.pdf", "slides"),
    ("other", "en", "latex/beamertheme-trigon/trigon_demo.pdf", "slides"),
    ("other", "en", "latex/modernposter/demo.pdf", "poster"),
    ("other", "en", "latex/examdesign/exampleb.pdf", "exam paper"),
    ("other", "it", "latex/cesenaexam/cesenaexam_example.pdf", "exam paper, Italian"),
    ("other", "en", "latex/msu-thesis/samples/MSU-thesis-template.pdf", "dissertation"),
    ("other", "en", "latex/mensa-tex/doc/mensa-tex-example.pdf", "weekly menu"),
    ("other", "en", "latex/jwjournal/jwjournal-demo-en.pdf", "diary"),
    ("other", "en", "latex/changelog/example.pdf", "change log"),
    ("other", "en", "latex/csvsimple/csvsimple-example.pdf", "data table"),
    ("other", "en", "latex-dev/base/ltnews22.pdf", "newsletter"),
    ("other", "en", "latex/estcpmm/sample.pdf", "project final report"),
    ("other", "en", "latex/erdc/sample.pdf", "technical report"),
    ("other", "en", "latex/nostarch/nssample.pdf", "book chapter"),
    ("other", "en", "latex/familytree/samples/Crawley.pdf", "family tree"),
    ("other", "de", "latex/dvdcoll/dcexample.pdf", "DVD catalogue"),
    ("other", "en", "latex/mcmthesis/mcmthesis-demo.pdf", "contest solution paper"),
    ("other", "en", "latex/ftc-notebook/example-notebook.pdf", "engineering notebook"),
    ("other", "de", "latex/beamer-fuberlin/exampleClass.pdf", "slides, German"),
    ("other", "fr", "latex/beamerdarkthemes/cormorantexampledefault.pdf", "slides, French"),
    ("other", "en", "latex/beamertheme-arguelles/demo/demo-arguelles.pdf", "slides"),
    ("other", "en", "latex/beamertheme-simpledarkblue/beamertheme-simpledarkblue-sample.pdf",
     "slides"),
    ("other", "en", "latex/beamertheme-light/beamertheme-light-example.pdf", "slides"),
    ("other", "de", "latex/bewerbung/argetabelle-example.pdf", "table of job applications"),
    ("other", "de", "latex/iodhbwm/examples/how-to-use-iodhbwm/iodhbwm-advanced-starter.pdf",
     "student project report"),
    ("other", "en", "latex/ndsu-thesis-2022/ndsu-example.pdf", "thesis"),
    ("other", "de", "latex/fbithesis/example.pdf", "thesis, German"),
    ("other", "de", "latex/jslectureplanner/examples/German/lectureprogram.pdf",
     "lecture programme"),
    ("other", "en", "latex/exsol/example-solutionbook.pdf", "solutions to exercises"),
    ("other", "es", "latex/jumplines/jumplines_example.pdf", "newspaper, Spanish"),
    ("other", "en", "latex/mlacls/mla-example.pdf", "student essay"),
    ("other", "de", "latex/proposal/dfg/proposal/public.pdf", "research grant proposal"),
]

FROZEN: list[tuple[str, str, str, str]] = [
    ("cv", "en", "latex/mycv/Examples/mycv-example-spl.pdf", ""),
    ("cv", "en", "latex/nihbiosketch/example-nihbiosketch.pdf", "NIH biographical sketch"),
    ("cv", "en", "latex/datatool/samples/sample-europecv-bib.pdf", "publication list of a CV"),
    ("letter", "de", "latex/urcls/URletter-DEMO.pdf", "university letterhead"),
    ("letter", "en", "latex/newlfm/testms.pdf", ""),
    ("letter", "en", "latex/jourcl/jourcl.pdf", "cover letter to a journal editor"),
    ("letter", "en", "latex/datatool/samples/sample-mail-merge.pdf", "mail-merged letters"),
    ("invoice", "fr", "xelatex/facture-belge-simple-sans-tva/article-facture.pdf", "Belgian"),
    ("form", "en", "latex/hagenberg-thesis/examples/HgbThesisTutorial/images/fragebogen.pdf",
     "German questionnaire (energy survey)"),
    ("scientific_article", "en", "latex/asmejour/asmejour-template.pdf", ""),
    ("scientific_article", "en", "latex/llncsconf/example/example_llncs_nocrop.pdf", ""),
    ("scientific_article", "en", "latex/sugconf/sugconf-template.pdf", ""),
    ("scientific_article", "en", "latex/prtec/PRTEC19-template.pdf", "extended abstract"),
    ("scientific_article", "en", "latex/els-cas-templates/doc/sc-sample.pdf", ""),
    ("manual", "en", "latex/newlfm/manual.pdf", "about letters"),
    ("manual", "en", "latex/mycv/mycv.pdf", "about CVs"),
    ("manual", "en", "latex/altfont/altfont.pdf", ""),
    ("manual", "en", "latex/clrstrip/clrstrip.pdf", ""),
    ("manual", "en", "latex/hardwrap/hardwrap.pdf", ""),
    ("manual", "en", "latex/listlbls/listlbls.pdf", ""),
    ("manual", "en", "latex/multidef/multidef.pdf", ""),
    ("manual", "en", "latex/tocvsec2/tocvsec2.pdf", ""),
    ("manual", "en", "latex/zref-vario/zref-vario.pdf", ""),
    ("policy", "en", f"{GSUTIL}/requests/.github/SECURITY.md", "vulnerability disclosure"),
    ("policy", "en", f"{GSUTIL}/requests/.github/CODE_OF_CONDUCT.md", "code of conduct, short"),
    ("policy", "en", f"{GSUTIL}/urllib3/CODE_OF_CONDUCT.md", CONTRIBUTOR_COVENANT + " 2.0"),
    ("policy", "en", f"{GSUTIL}/certifi/SECURITY.md", "security policy, short"),
    ("contract", "en", f"{LICENSES}/Artistic", LICENCE_NOTE),
    ("contract", "en", f"{LICENSES}/MPL-1.1", LICENCE_NOTE),
    ("contract", "en", f"{LICENSES}/GFDL-1.3", LICENCE_NOTE),
    ("other", "en", "latex/fancyslides/doc/example.pdf", "slides"),
    ("other", "en", "latex/exam-n/template-master.pdf", "exam paper"),
    ("other", "en", "latex/mugsthesis/sample/mugsthesis_sample.pdf", "thesis"),
    ("other", "nl", "latex/kdgdocs/kdgcoursetext-example.pdf", "course notes, Dutch"),
    ("other", "en", "latex/sides/sides-sample.pdf", "play script"),
    ("other", "en", "latex/limap/samples/sample.pdf", "information-mapping document"),
    ("other", "en", "latex/datatool/samples/sample-barchart.pdf", "table of marks and chart"),
    ("other", "en", "latex/elzcards/elzcards-examples.pdf", "business and index cards"),
    ("other", "en", "latex/glossaries/samples/sample-index.pdf", "short book with glossary"),
]


def project(rel: str) -> str:
    """The source project of a path: the CTAN package, or the PROJECTS entry."""
    if rel.startswith(("latex", "xelatex", "lualatex", "generic")):
        return rel.split("/")[1]
    for prefix, (_, name) in PROJECTS.items():
        if rel.lstrip("/").startswith(prefix.lstrip("/")):
            return name
    raise KeyError(f"no licence known for {rel}")


def tex_licences(root: Path) -> dict[str, str]:
    """CTAN package -> licence, from Debian's TeX Live ``Licenses.gz`` files."""
    out: dict[str, str] = {}
    for path in sorted((root / "usr/share/doc").glob("texlive-*/Licenses.gz")):
        for line in gzip.open(path, "rt", encoding="utf-8"):
            name, sep, rest = line.partition(": ")
            if sep and " " not in name and not line.startswith(("texmf", " ")):
                out.setdefault(name, rest.strip())
    return out


def read(path: Path) -> tuple[str, int]:
    """(text, pages) as pdf.text reads a PDF; a text file as it is."""
    if path.suffix != ".pdf":
        return path.read_text(encoding="utf-8"), 1
    sys.path.insert(0, str(ROOT / "plugins" / "docpipe-pdf"))
    from docpipe_pdf.text import PdfText, read_document

    doc = read_document(str(path), PdfText.Params())
    return doc["text"], doc["page_count"]


def rows(entries: list[tuple[str, str, str, str]], root: Path, keep: int,
         licences: dict[str, str]) -> list[dict[str, object]]:
    out = []
    for label, lang, rel, note in entries:
        tex = rel.startswith(("latex", "xelatex", "lualatex", "generic"))
        path = root / TEX / rel if tex else root / rel.lstrip("/")
        text, pages = read(path)
        name = project(rel)
        if tex:
            source = f"Debian 12 TeX Live documentation, CTAN package {name}: {TEX}/{rel}"
            licence = licences.get(name) or licences["latex"]  # latex-dev/base: the kernel
        else:
            source = f"{name}: /{rel.lstrip('/')}"
            licence = next(lic for p, (lic, n) in PROJECTS.items() if n == name)
        out.append({"id": f"real-{name}-{Path(rel).stem}".lower(), "label": label, "lang": lang,
                    "pages": pages, "source": source, "licence": licence, "note": note,
                    "text": text[:keep].strip()})
    return out


def check_apart() -> None:
    """No source project gives documents to two of: training, frozen, the first real set."""
    sys.path.insert(0, str(ROOT / "models" / "eval"))
    from extract_real import LABELS

    first = {rel.split("/")[0] for _, _, rel, _ in LABELS if not rel.startswith("/")}
    train = {project(rel) for _, _, rel, _ in TRAIN}
    frozen = {project(rel) for _, _, rel, _ in FROZEN}
    for a, b, what in ((train, frozen, "training and frozen"), (train, first, "training and "
                       "real_docs"), (frozen, first, "frozen and real_docs")):
        if a & b:
            raise SystemExit(f"assemble_real: {what} share sources: {sorted(a & b)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path("/"),
                    help="where the Debian packages are installed or unpacked")
    args = ap.parse_args(argv)
    check_apart()
    licences = tex_licences(args.root)
    for entries, out, keep in ((TRAIN, TRAIN_OUT, KEEP), (FROZEN, FROZEN_OUT, FROZEN_KEEP)):
        got = rows(entries, args.root, keep, licences)
        ids = [r["id"] for r in got]
        assert len(ids) == len(set(ids)), "duplicate ids"
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in got),
                       encoding="utf-8")
        print(f"assemble_real: {len(got)} documents -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
