"""``ocr.tesseract`` with ``languages: "auto"``: each page read with the pack of its language.

Real Tesseract on pages rendered here and saved as image-only PDFs (a scan: no text layer).
The text is Articles 1 and 2 of the Universal Declaration of Human Rights in English,
French and German (the United Nations' own translations, free to reproduce).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pymupdf
import pytesseract
import pytest
from docpipe_ocr.route import guess, probe_band, scores
from docpipe_ocr.tesseract import TesseractOcr, text_and_confidence
from ocr_testdocs import image_pdf
from PIL import Image
from pydantic import ValidationError

from docpipe.testing import BlockContract

Params = TesseractOcr.Params
DPI = 200

UDHR = {
    "eng": "All human beings are born free and equal in dignity and rights. They are endowed with "
           "reason and conscience and should act towards one another in a spirit of brotherhood. "
           "Everyone is entitled to all the rights and freedoms set forth in this Declaration, "
           "without distinction of any kind, such as race, colour, sex, language, religion, "
           "political or other opinion, national or social origin, property, birth or other status.",
    "fra": "Tous les êtres humains naissent libres et égaux en dignité et en droits. Ils sont doués "
           "de raison et de conscience et doivent agir les uns envers les autres dans un esprit de "
           "fraternité. Chacun peut se prévaloir de tous les droits et de toutes les libertés "
           "proclamés dans la présente Déclaration, sans distinction aucune, notamment de race, "
           "de couleur, de sexe, de langue, de religion, d'opinion politique ou de toute autre "
           "opinion, d'origine nationale ou sociale, de fortune, de naissance ou de toute autre "
           "situation.",
    "deu": "Alle Menschen sind frei und gleich an Würde und Rechten geboren. Sie sind mit Vernunft "
           "und Gewissen begabt und sollen einander im Geist der Brüderlichkeit begegnen. Jeder hat "
           "Anspruch auf die in dieser Erklärung verkündeten Rechte und Freiheiten ohne "
           "irgendeinen Unterschied, etwa nach Rasse, Hautfarbe, Geschlecht, Sprache, Religion, "
           "politischer oder sonstiger Überzeugung, nationaler oder sozialer Herkunft, Vermögen, "
           "Geburt oder sonstigem Stand.",
}
#: words only the right pack reads with their accents
ACCENTED = {"eng": ["brotherhood"], "fra": ["égaux", "fraternité", "Déclaration"],
            "deu": ["Würde", "Brüderlichkeit", "Überzeugung"]}


def page(text: str, fontsize: float = 12) -> pymupdf.Pixmap:
    """A greyscale scan of an A4 page with ``text`` set in a text box."""
    doc = pymupdf.open()
    p = doc.new_page(width=595, height=842)
    assert p.insert_textbox(pymupdf.Rect(70, 90, 525, 780), text, fontsize=fontsize, fontname="helv") >= 0
    return p.get_pixmap(dpi=DPI, colorspace=pymupdf.csGRAY)


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("routing")
    out = {lang: image_pdf(folder / f"{lang}.pdf", [page(text)], dpi=DPI) for lang, text in UDHR.items()}
    out["mixed"] = image_pdf(folder / "mixed.pdf", [page(UDHR["fra"]), page(UDHR["deu"]), page(UDHR["eng"])],
                             dpi=DPI)
    out["sparse"] = image_pdf(folder / "sparse.pdf", [page("No. 4711 / 2026-03-01", fontsize=14)], dpi=DPI)
    return out


@pytest.fixture(scope="module")
def block() -> TesseractOcr:
    b = TesseractOcr()
    b.setup(Params(languages="auto"))
    return b


def ocr(block: TesseractOcr, path: Path, number: int = 1, **params: Any) -> dict[str, Any]:
    (result,) = block.run([{"path": str(path), "page": number}], Params(**{"dpi": DPI, **params}))
    assert isinstance(result, dict), result
    return result


class TestRoutedContract(BlockContract):
    block = TesseractOcr
    params: ClassVar[dict[str, Any]] = {"languages": "auto", "dpi": 150}
    inputs: ClassVar[list[dict[str, Any]]] = [
        {"path": str(Path(__file__).resolve().parents[3] / "samples" / "scan.png"), "page": 1}]


@pytest.mark.parametrize("language", ["eng", "fra", "deu"])
def test_each_page_is_read_with_its_own_pack(block: TesseractOcr, scans: dict[str, Path], language: str) -> None:
    out = ocr(block, scans[language], languages="auto")
    assert out["ocr_language"] == language
    for word in ACCENTED[language]:
        assert word in out["ocr_text"], (word, out["ocr_text"])


def test_english_alone_loses_the_accents(block: TesseractOcr, scans: dict[str, Path]) -> None:
    """Why routing matters: the fixed eng pack drops what the fra pack reads."""
    fixed = ocr(block, scans["fra"], languages="eng")
    assert fixed["ocr_language"] == "eng"
    assert not all(word in fixed["ocr_text"] for word in ACCENTED["fra"])


def test_a_mixed_document_gets_a_pack_per_page(block: TesseractOcr, scans: dict[str, Path]) -> None:
    chosen = [ocr(block, scans["mixed"], n, languages="auto")["ocr_language"] for n in (1, 2, 3)]
    assert chosen == ["fra", "deu", "eng"]


def test_a_page_too_sparse_to_tell_is_read_with_every_candidate(block: TesseractOcr, scans: dict[str, Path]) -> None:
    out = ocr(block, scans["sparse"], languages="auto", candidates="eng+fra+deu")
    assert out["ocr_language"] == "eng+fra+deu"
    assert "4711" in out["ocr_text"]


def test_candidates_limit_the_choice(block: TesseractOcr, scans: dict[str, Path]) -> None:
    assert ocr(block, scans["fra"], languages="auto", candidates="fra+deu")["ocr_language"] == "fra"
    assert ocr(block, scans["deu"], languages="auto", candidates="deu")["ocr_language"] == "deu"


def test_fixed_languages_read_exactly_as_tesseract_does(block: TesseractOcr, scans: dict[str, Path]) -> None:
    for languages in ("eng", "deu+eng"):
        out = ocr(block, scans["deu"], languages=languages)
        assert out["ocr_language"] == languages
        with pymupdf.open(scans["deu"]) as doc:
            pix = doc[0].get_pixmap(dpi=DPI, colorspace=pymupdf.csGRAY)
        image = Image.frombytes("L", (pix.width, pix.height), pix.samples)
        image.format = "BMP"
        tsv = pytesseract.image_to_data(image, lang=languages, config=f"--psm 3 --dpi {DPI}")
        assert (out["ocr_text"], out["ocr_confidence"]) == text_and_confidence(tsv)


def test_blank_page_has_no_language(block: TesseractOcr, tmp_path: Path) -> None:
    doc = pymupdf.open()
    doc.new_page()
    doc.save(tmp_path / "blank.pdf")
    out = ocr(block, tmp_path / "blank.pdf", languages="auto")
    assert out["ocr_blank"] is True and out["ocr_language"] == ""


def test_the_band_is_a_small_part_of_the_page() -> None:
    pix = page(UDHR["eng"] + " " + UDHR["eng"] + " " + UDHR["eng"])
    image = Image.frombytes("L", (pix.width, pix.height), pix.samples)
    band, band_dpi = probe_band(image, DPI)
    assert band_dpi == pytest.approx(150, rel=0.01)
    assert band.width * band.height < image.width * image.height / 10


def test_guess_by_stopwords() -> None:
    candidates = ["eng", "deu", "fra", "spa"]
    for language, text in UDHR.items():
        assert guess(text, candidates) == language
        # the eng pack reads French and German without their accents: still told apart
        assert guess(text.replace("é", "e").replace("ü", "u").replace("Ü", "U"), candidates) == language
    assert guess("4711 2026-03-01", candidates) is None
    assert guess("the and", candidates) is None  # too few to be sure
    assert scores("Il est là, et le chat est dans la maison", ["fra", "spa"]) == {"fra": 6, "spa": 0}


def test_routing_params() -> None:
    assert Params(languages="auto").candidates == "eng+deu+fra+spa"
    assert Params().languages == "eng"
    with pytest.raises(ValidationError, match="routing knows the stopwords"):
        Params(languages="auto", candidates="eng+rus")
    with pytest.raises(ValidationError, match="names a pack twice"):
        Params(languages="auto", candidates="eng+eng")
    with pytest.raises(ValidationError, match="'auto' stands alone"):
        Params(languages="auto+eng")
