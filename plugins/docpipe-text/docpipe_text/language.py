"""``text.language``: the language of a document and of each of its pages (langdetect).

langdetect samples n-grams at random, so two runs over the same text can disagree.
Here every detection gets a fresh detector from a factory whose seed is 0: the
detector reseeds its own ``random.Random`` from it before sampling, so the same text
always gets the same answer, whatever was detected before it, in whichever thread.
The block owns its factory (``setup`` loads the profiles into it) rather than
setting ``DetectorFactory.seed`` on langdetect's module-global factory: the result
is the same and other users of langdetect in the process are left alone.

Odd input never raises: empty pages, digits, punctuation, a single short word,
binary garbage all come out as ``"unknown"`` with score 0.0.
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from docpipe.blocks import Block, Manifest, Result, State
from docpipe.errors import BlockFailed
from docpipe_text.textnorm import flatten, page_list

if TYPE_CHECKING:
    from langdetect.detector_factory import DetectorFactory

UNKNOWN = "unknown"
#: the sample is made of this many windows at most ...
SAMPLE_WINDOWS = 8
#: ... each at least this long, so a window holds a few sentences, not a few words
MIN_WINDOW = 1000
#: a text with more than this share of junk characters (controls, U+FFFD, private use,
#: unassigned code points) is binary garbage, not language
MAX_JUNK_SHARE = 0.05
_JUNK_CATEGORIES = frozenset({"Cc", "Co", "Cn", "Cs"})


class Language(Block):
    """Detects the language of the whole document and of each page (ISO 639-1 codes).

    The document language is detected on the whole text, not voted from the pages:
    a vote counts a ten-word cover page as much as a full page of body text, and a
    document made of many short pages (each under ``min_chars``) has no page votes
    at all, while its text together is plenty. Text longer than ``max_chars`` is
    detected on a bounded sample: up to 8 windows of equal length (at least 1000
    characters each), spread evenly from the start to the end of the text and trimmed
    to whole words, ``max_chars`` characters in all. Spreading the windows keeps an
    English preface or a German appendix from deciding the language of a long body in
    another language, and bounds the cost of a 500-page document.
    """

    manifest = Manifest(
        name="text.language",
        version="1.0",
        reads={"page_texts": list[str]},
        writes={"language": str, "language_score": float, "page_languages": list[dict]},
        # ~7-12 ms per page of pure Python (measured on the samples), ~50 ms for a
        # 10,000-character sample, 1.2 s to load the profiles: far too slow for the
        # engine loop (inline), which would stall every other step while it runs. A
        # thread keeps the loop free; langdetect holds the GIL, so a process pool
        # would be needed for parallel speed-up, which this block does not need.
        runtime="thread",
        batch=1,
        description=(
            "language: ISO 639-1 code of the whole text ('unknown' when too short or not "
            "language); language_score: its probability (0.0 when unknown); page_languages: "
            "one {page, language, score} per page, pages 1-based."
        ),
    )

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

        min_chars: int = Field(
            default=20,
            ge=0,
            description="a text with fewer letters than this is 'unknown' (also per page)",
        )
        max_chars: int = Field(
            default=10000,
            ge=100,
            description=(
                "detect on a sample of at most this many characters: up to 8 equal windows "
                "spread evenly over the text"
            ),
        )

    def __init__(self) -> None:
        self._factory: DetectorFactory | None = None

    def setup(self, params: BaseModel) -> None:
        """Load langdetect's 55 language profiles (about 1.2 s) into this block's own factory."""
        from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

        factory = DetectorFactory()
        factory.load_profile(PROFILES_DIRECTORY)
        factory.set_seed(0)
        self._factory = factory

    def run(self, batch: list[State], params: Any) -> list[Result]:
        if self._factory is None:
            self.setup(params)
        return [self._detect_document(state["page_texts"], params) for state in batch]

    def _detect_document(self, value: object, params: Language.Params) -> Result:
        pages = page_list(value)
        if isinstance(pages, str):
            return BlockFailed(pages)
        language, score = self.detect("\n\n".join(pages), params.min_chars, params.max_chars)
        per_page = []
        for number, page in enumerate(pages, start=1):
            if len(pages) == 1:  # the page is the whole text: same answer, no second detection
                page_language, page_score = language, score
            else:
                page_language, page_score = self.detect(page, params.min_chars, params.max_chars)
            per_page.append({"page": number, "language": page_language, "score": page_score})
        return {"language": language, "language_score": score, "page_languages": per_page}

    def detect(self, text: str, min_chars: int = 20, max_chars: int = 10000) -> tuple[str, float]:
        """The language of ``text`` and its probability (rounded to 4 decimals), or
        ``("unknown", 0.0)`` when the text is too short, is not language, or langdetect
        finds nothing to go on."""
        from langdetect.lang_detect_exception import LangDetectException

        if self._factory is None:
            self.setup(Language.Params())
        assert self._factory is not None
        sample = bounded_sample(flatten(text), max_chars)
        if is_garbage(sample) or sum(map(str.isalpha, sample)) < max(min_chars, 1):
            return UNKNOWN, 0.0
        detector = self._factory.create()
        detector.set_max_text_length(len(sample) + 1)
        try:
            detector.append(sample)
            ranked = detector.get_probabilities()
        except LangDetectException:  # "no features in text": nothing langdetect can use
            return UNKNOWN, 0.0
        scores: dict[str, float] = {}
        for guess in ranked:
            code = iso639_1(guess.lang)
            scores[code] = scores.get(code, 0.0) + guess.prob
        if not scores:
            return UNKNOWN, 0.0
        best = max(scores, key=lambda code: scores[code])
        return best, round(min(scores[best], 1.0), 4)


def iso639_1(code: str) -> str:
    """langdetect's code as ISO 639-1: its only non-ISO codes are ``zh-cn`` and ``zh-tw``."""
    return code.partition("-")[0]


def bounded_sample(text: str, max_chars: int) -> str:
    """``text`` itself when it fits in ``max_chars``; else up to 8 windows of equal length
    spread evenly from its start to its end, trimmed to whole words, joined by spaces."""
    if len(text) <= max_chars:
        return text
    windows = max(1, min(SAMPLE_WINDOWS, max_chars // MIN_WINDOW))
    size = max_chars // windows
    last_start = len(text) - size
    parts = []
    for i in range(windows):
        start = last_start * i // (windows - 1) if windows > 1 else 0
        end = start + size
        part = text[start:end]
        if start > 0 and text[start - 1] != " ":  # drop the cut word at the start
            part = part.partition(" ")[2]
        if end < len(text) and text[end] != " ":  # and at the end
            part = part.rpartition(" ")[0]
        if part:
            parts.append(part)
    return " ".join(parts)


def is_garbage(text: str) -> bool:
    """Whether more than 5% of ``text`` are characters no language text has (binary data
    decoded as text: control characters, U+FFFD, private-use or unassigned code points)."""
    if not text:
        return False
    junk = sum(1 for c in text if c == "\ufffd" or unicodedata.category(c) in _JUNK_CATEGORIES)
    return junk > MAX_JUNK_SHARE * len(text)
