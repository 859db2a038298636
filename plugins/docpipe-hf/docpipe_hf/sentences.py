"""A small, predictable sentence splitter and the chunker ``hf.translate`` feeds its model with.

Paragraphs are separated by blank lines; inside a paragraph, line breaks are spaces (PDF
text is hard-wrapped). A sentence ends at ``.``, ``!``, ``?`` or ``…`` (closing quotes and
brackets included) followed by whitespace and then an upper-case letter, a digit or an
opening quote or bracket; except after a known abbreviation (``Dr.``, ``e.g.``, ``z.B.``,
``M.``, ``Nr.``, …) or a single initial (``J. Smith``). That is all: no language models,
no guessing about lower-case sentence starts. It is written for scripts that put spaces
between sentences (Latin, Greek, Cyrillic); other text becomes one long "sentence" and is
cut by tokens like any over-long sentence.

Chunks: consecutive sentences of one paragraph are packed into chunks of at most
``budget`` tokens (as the model's tokenizer counts them); a sentence longer than the budget
is cut between words, and a word longer than the budget between characters. A chunk never
spans two paragraphs, so the paragraph breaks survive translation.
"""

from __future__ import annotations

import re
from collections.abc import Callable

#: lower-case, without the final dot; English, German and French
ABBREVIATIONS = frozenset("""
mr mrs ms dr prof st sr jr vs etc e.g i.e cf no nos fig figs eq approx dept inc ltd co corp
jan feb mar apr jun jul aug sep sept oct nov dec mon tue wed thu fri sat sun
z.b u.a d.h bzw ca evtl ggf hr fr nr str s.o usw vgl inkl zzgl
m mm mme mlle mgr me av bd env p.ex cie
""".split())

_END = re.compile(r"[.!?…]+[\"'»”’)\]]*\s+")
_OPENERS = "\"'«“‘([¿¡"
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n")

#: counts the tokens of each string (no special tokens)
Counter = Callable[[list[str]], list[int]]


def paragraphs(text: str) -> list[str]:
    """The non-empty paragraphs of ``text``, whitespace runs collapsed to one space."""
    return [p for p in (" ".join(block.split()) for block in _PARAGRAPH.split(text)) if p]


def _is_abbreviation(word: str) -> bool:
    word = word.lstrip(_OPENERS).rstrip(".").lower()
    return word in ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def split_sentences(paragraph: str) -> list[str]:
    """The sentences of one paragraph (see the module docstring for the rules)."""
    out: list[str] = []
    start = 0
    for m in _END.finditer(paragraph):
        following = paragraph[m.end():m.end() + 1]
        if not following or not (following.isupper() or following.isdigit()
                                 or following in _OPENERS):
            continue
        before = paragraph[start:m.start() + 1].split()
        if m.group().startswith(".") and before and _is_abbreviation(before[-1]):
            continue
        out.append(paragraph[start:m.end()].strip())
        start = m.end()
    tail = paragraph[start:].strip()
    if tail:
        out.append(tail)
    return out


def _cut_long(sentence: str, tokens: int, budget: int, count: Counter) -> list[str]:
    """``sentence`` (``tokens`` long, over ``budget``) cut between words into pieces that fit."""
    words = sentence.split(" ")
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    for word, n in zip(words, count(words), strict=True):
        if n > budget:  # one giant "word" (a URL, base64, a script without spaces)
            if current:
                pieces.append(" ".join(current))
                current, used = [], 0
            step = max(1, len(word) * budget // n)
            pieces.extend(word[i:i + step] for i in range(0, len(word), step))
            continue
        if current and used + n > budget:
            pieces.append(" ".join(current))
            current, used = [], 0
        current.append(word)
        used += n
    if current:
        pieces.append(" ".join(current))
    return pieces


def chunk_text(text: str, budget: int, count: Counter) -> list[list[str]]:
    """``text`` as paragraphs of chunks, each chunk at most ``budget`` tokens (by ``count``,
    give or take the joins between sentences); whole sentences wherever they fit."""
    if budget < 1:
        raise ValueError(f"chunk budget must be at least 1 token, got {budget}")
    paras = [split_sentences(p) for p in paragraphs(text)]
    flat = [s for sentences in paras for s in sentences]
    lengths = iter(count(flat)) if flat else iter(())
    out: list[list[str]] = []
    for sentences in paras:
        chunks: list[str] = []
        current: list[str] = []
        used = 0
        for sentence in sentences:
            n = next(lengths)
            if n > budget:
                if current:
                    chunks.append(" ".join(current))
                    current, used = [], 0
                chunks.extend(_cut_long(sentence, n, budget, count))
                continue
            if current and used + n > budget:
                chunks.append(" ".join(current))
                current, used = [], 0
            current.append(sentence)
            used += n
        if current:
            chunks.append(" ".join(current))
        out.append(chunks)
    return out
