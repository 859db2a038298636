"""Control IDs of four audit frameworks, found in page text, each reported only where the
text names its framework: a finding an auditor cannot find in the text as that
framework's ID is a defect.

**Shapes.** Each framework's IDs are matched by shape, then checked against the
framework's real numbering (the tables below), so a number that merely looks like an ID
is dropped:

* **NIST SP 800-53** (rev. 5): ``AC-2``, ``AC-02``, ``AC–2`` (any hyphen or en dash),
  ``AC-2(1)``, ``AC-2 (1)``, ``AC-2c`` (item c) -> ``AC-2``, ``AC-2(1)``. Only the 20 real family prefixes,
  uppercase, not glued to a word or a hyphen before (``HVAC-2000``, ``X-AC-2``) and not
  followed by more digits; the control number must exist in its family (``SC-51`` does,
  ``CA-90`` does not).
* **ISO/IEC 27001** Annex A: 2013 style ``A.9.2.1`` (checked against the 114 controls of
  2013) and 2022 style ``A.5.15`` (5.1-5.37, 6.1-6.8, 7.1-7.14, 8.1-8.34); a bare ``5.15``
  is ``A.5.15`` (rules below). A bare number that is part of something else never is:
  a version (``5.15.2``, ``v5.15``), a larger number (``1,5.15``, ``-5.15``, ``15.5.15``),
  an amount, a percentage, a time or a measure (``5.15 %``, ``€ 5.15``, ``8.30 am``,
  ``7.5 kg``, ``7.5 pt``).
* **SOC 2** trust services criteria (2017): ``CC1.1``-``CC9.2``; ``A1.x``, ``C1.x``,
  ``PI1.x``, ``P1.x``-``P8.x``.
* **CIS Controls** (v8): ``CIS 4.1``, ``CIS Control 4``, ``CIS Safeguard 4.1``, ``CIS
  Controls 4.1``, ``CIS CSC 4`` -> ``CIS 4.1`` / ``CIS 4``; control 1-18, safeguard numbers
  as in v8 (153 in all). CIS Benchmark numbers (``1.1.1``) are not CIS Controls.

**Where an ID counts.** The framework must be named where the ID stands:

* A CIS ID names its framework itself (``CIS Safeguard 6.4``): it counts anywhere.
* NIST ``AC-2``, ISO ``A.5.15`` / ``A.9.2.1`` and SOC 2 ``CC6.1`` count in a document
  that names an audit framework somewhere: NIST (``NIST``, ``SP 800-53``, ``FedRAMP``,
  ``FISMA``), ISO 27001 (``ISO 27001``, ``ISO/IEC 27001``, ``ISO27001``, ``Annex A
  control``), SOC 2 (``SOC 2``, ``SOC II``, ``trust services criteria``) or CIS (``CIS
  Controls``, ``CIS Benchmark``, a CIS ID). Outside such documents the shapes are other
  things: ``PT-06`` is an ISO 3166-2 region code, ``A.6.1`` an appendix section. An
  ``A.6.1`` right after ``appendix``, ``section``, ``table``, ``figure``... is a section
  number in any document.
* A bare ISO number needs ISO 27001 in its own sentence: ``5.15`` is ``A.5.15`` only when
  the nearest *reference* before it in its sentence is ISO 27001 (or ``Annex A`` in a
  document that names ISO 27001). References are framework names (NIST, SOC 2, CIS, PCI
  DSS, GDPR, HIPAA, other ISO standards...), other frameworks' IDs (``AC-2``, ``CC6.1``,
  ``CIS 4.1``) and words that number something else (section, clause, page, table,
  version, article, requirement, ...). A number inside another framework's ID is never
  an ISO number (``CIS Safeguard 6.4`` is not ``A.6.4``), and a page that writes Annex A
  controls as ``A.5.15`` has no bare ones (a bare ``6.1`` there is a clause or a section).
* SOC 2's ``A1.x``, ``C1.x``, ``PI1.x``, ``P1.x``-``P8.x`` need SOC 2 in their own
  sentence: one that names SOC 2 / trust services criteria or cites a CC criterion that
  counts (``A1.2`` alone is a paper size, ``P1.1`` a project phase).

A sentence ends at ``.``, ``!`` or ``?`` and a space before a capital, a digit or an
opening bracket or quote, not after a single letter or an abbreviation (``e.g.``,
``No.``, ``Sec.``); no sentence crosses a page. Dates never match: ``2022-05-15`` has no
family prefix and no dotted pair.
"""

from __future__ import annotations

import re
import string
import typing
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from typing import Literal, NamedTuple

Framework = Literal["NIST SP 800-53", "ISO/IEC 27001", "SOC 2", "CIS Controls"]
#: the frameworks, in the order ``control_ids`` lists them
FRAMEWORKS: tuple[Framework, ...] = typing.get_args(Framework)
NIST, ISO, SOC2, CIS = FRAMEWORKS
#: how many occurrences of one ID ``find_controls`` quotes
MAX_OCCURRENCES = 3

#: NIST SP 800-53 rev. 5 (5.1.1): family -> highest control number
NIST_FAMILIES = {
    "AC": 25, "AT": 6, "AU": 16, "CA": 9, "CM": 14, "CP": 13, "IA": 13, "IR": 10, "MA": 7,
    "MP": 8, "PE": 23, "PL": 11, "PM": 32, "PS": 9, "PT": 8, "RA": 10, "SA": 23, "SC": 51,
    "SI": 23, "SR": 12,
}
#: ISO/IEC 27001:2022 Annex A: clause -> number of controls
ISO_2022 = {5: 37, 6: 8, 7: 14, 8: 34}
#: ISO/IEC 27001:2013 Annex A: clause -> controls per category (A.9.2 has 6: A.9.2.1-A.9.2.6)
ISO_2013 = {
    5: (2,), 6: (5, 2), 7: (2, 3, 1), 8: (4, 3, 3), 9: (2, 6, 1, 5), 10: (2,), 11: (6, 9),
    12: (4, 1, 1, 4, 1, 2, 1), 13: (3, 4), 14: (3, 9, 1), 15: (3, 2), 16: (7,), 17: (3, 1),
    18: (5, 3),
}
#: SOC 2 trust services criteria (2017, revised points of focus 2022): series -> criteria
SOC2_CRITERIA = {
    "CC1": 5, "CC2": 3, "CC3": 4, "CC4": 2, "CC5": 3, "CC6": 8, "CC7": 5, "CC8": 1, "CC9": 2,
    "A1": 3, "C1": 2, "PI1": 5, "P1": 1, "P2": 1, "P3": 2, "P4": 3, "P5": 2, "P6": 7, "P7": 1,
    "P8": 1,
}
#: CIS Controls v8: control -> number of safeguards
CIS_SAFEGUARDS = {
    1: 5, 2: 7, 3: 14, 4: 12, 5: 6, 6: 8, 7: 7, 8: 12, 9: 7, 10: 7, 11: 5, 12: 8, 13: 11, 14: 9,
    15: 7, 16: 14, 17: 9, 18: 5,
}

_NUM = r"0?[1-9]\d?"  # 1-99, one leading zero allowed (AC-02)
_END = r"(?!\w)(?!\.\d)"  # not glued to a word, not the start of a longer dotted number
#: the other hyphens people type in IDs (hyphen, non-breaking hyphen, en dash) -> "-"
_DASHES = ("\u2010", "\u2011", "\u2013")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
# Every pattern run over every page starts with a literal, which the regex engine finds with
# a fast substring search; what comes *before* a match is checked in Python. A lookbehind or
# a character class at the start of a pattern makes the engine try every position: ~10x
# slower. The one pattern that starts with an alternation, _OTHER_REF_RE, runs only on pages
# that hold a bare ISO number in a document that names ISO 27001.
#: an item letter may follow (AC-2c, item c of AC-2: reported as AC-2); AC-2x is not an ID
_NIST_RE = re.compile(rf"-({_NUM})(?:\s?\(({_NUM})\))?[a-l]?(?!\w)(?!-\d)(?!\.\d)")
_ISO_A_RE = re.compile(rf"A\.([1-9]\d?)\.([1-9]\d?)(?:\.([1-9]\d?))?{_END}")
#: the ".15" of a bare ISO 5.15 and the ".1" of SOC 2 CC6.1; the part before the dot is checked apart
_DOTTED_RE = re.compile(rf"\.([1-9]\d?){_END}(?!,\d)")
_SOC2_SERIES_RE = re.compile(r"(?:CC|PI|A|C|P)[1-9]")
_CIS_RE = re.compile(
    r"CIS(?:\s(?i:critical\ssecurity\s)?(?i:controls?|safeguards?|sub-?controls?|csc))?"
    rf"\s#?([1-9]\d?)(?:\.([1-9]\d?))?{_END}"
)
#: a sentence may end here; the character after the space and the word before are checked apart
_SENTENCE_END_RE = re.compile(r"[.!?] ")

# References, found in ASCII-lowercased text (same offsets as the page). Kinds: a framework,
# _ANNEX_A (ISO 27001's where the document names ISO 27001), or _OTHER (something else).
_ANNEX_A, _OTHER = "annex a", "other"
_ISO_NAME_RE = re.compile(r"iso[\s-]?(?:/\s?iec[\s-]?)?(\d{4,5})(?!\d)")  # 27001, or another standard
_ANNEX_A_RE = re.compile(r"annex a(?!\w)(\scontrols?(?!\w))?")  # "annex a control(s)" is ISO 27001's own
_NAME_RES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"nist(?!\w)"), NIST), (re.compile(r"sp\s?800-\d+"), NIST),
    (re.compile(r"fedramp(?!\w)"), NIST), (re.compile(r"fisma(?!\w)"), NIST),
    (re.compile(r"soc\s?(?:2|ii)(?!\w)"), SOC2), (re.compile(r"trust services? criteria(?!\w)"), SOC2),
)
#: "cis controls", "cis critical security controls", "cis benchmark": CIS; a lone "cis": another thing
_CIS_NAME_RE = re.compile(r"cis(?!\w)(\s(?:critical\ssecurity\s)?controls?(?!\w)|\sbenchmarks?(?!\w))?")
_OTHER_REF_RE = re.compile(  # \b first: twice as fast as trying every position
    r"\b(?:pci(?:[\s-]?dss)?|hipaa|gdpr|cobit|hitrust|cmmc|nis\s?2|sox|tisax|owasp|asvs|soc\s?[13]"
    r"|section|sect|sec|chapter|ch|page|p|pp|table|tab|figure|fig|appendix|appendices"
    r"|annex\s[b-z]|article|art|paragraph|para|clause|step|item|part|phase|stage|line|row"
    r"|exhibit|schedule|edition|version|ver|release|rev|revision|requirement|recommendation"
    r"|rule)s?(?!\w)|§"
)
#: an explicit A.6.1 after these words is a section of the document, not an Annex A control
_SECTION_WORDS = frozenset({"appendix", "appendices", "section", "sections", "sec", "chapter", "ch",
                            "table", "tab", "figure", "fig", "page", "p", "pp", "equation", "eq",
                            "exhibit", "schedule", "step", "item", "part", "paragraph", "para", "§"})
#: a period after these words (lowercased) or after a single letter ends no sentence
_ABBREVIATIONS = frozenset({"e.g", "i.e", "cf", "vs", "no", "nr", "sec", "art", "para", "fig", "tab",
                            "approx", "incl", "ref", "rev", "vol", "ch", "pp", "ca", "al", "ver",
                            "dept", "inc", "ltd", "co", "corp", "mr", "mrs", "ms", "dr", "prof", "u.s"})
#: a bare ISO number may not follow these characters: 1,5.15 -5.15 +5.15 $5.15 #5.15 1/5.15
_NOT_BEFORE_BARE = frozenset(".,/#$€£¥+-_")
#: a bare ISO number next to one of these words is a quantity, a price, a time or a version
_NOT_ISO_BEFORE = frozenset({"v", "ver", "version", "release", "rel", "eur", "usd", "gbp", "chf",
                             "score", "cvss", "rating", "€", "$", "£", "¥"})
_NOT_ISO_AFTER = frozenset({"%", "‰", "°", "am", "pm", "a.m", "p.m", "h", "hrs", "hours", "uhr",
                            "s", "ms", "sec", "min", "mins", "minutes", "days", "weeks", "months",
                            "years", "mm", "cm", "m", "km", "kg", "g", "mb", "gb", "tb", "kb", "pt",
                            "px", "dpi", "ghz", "mhz", "x", "eur", "usd", "gbp", "chf", "€", "$", "£",
                            "¥"})


class _Hit(NamedTuple):
    framework: str
    cid: str
    start: int
    end: int


class _Ref(NamedTuple):
    end: int  # a bare number after this offset is in its scope
    start: int
    kind: str


def find_controls(pages: Iterable[str], frameworks: Iterable[str] = FRAMEWORKS) -> list[dict[str, object]]:
    """Every control ID in ``pages`` (whitespace-flattened page texts, in order) of the
    chosen frameworks that counts where it stands (module docstring): one ``{"id",
    "framework", "count", "pages", "occurrences"}`` per canonical ID, pages 1-based,
    sorted by framework (in :data:`FRAMEWORKS` order) then by number. ``occurrences`` quotes
    the first :data:`MAX_OCCURRENCES` as ``{"page", "text", "context"}``: the ID as written
    and the words around it (for a bare number, from the reference that makes it one)."""
    pages = list(pages)
    lowered = [_lower(p) for p in pages]
    names = [list(_name_refs(low)) for low in lowered]
    cis_hits = [list(_cis_hits(p)) for p in pages]
    iso_named = any(r.kind == ISO for refs in names for r in refs)
    # a document about audit frameworks: one is named, or a CIS ID (which names its own)
    about = iso_named or any(cis_hits) or any(r.kind in FRAMEWORKS for refs in names for r in refs)
    wanted = set(frameworks)
    found: dict[tuple[str, str], list[tuple[int, _Hit, int]]] = {}
    for number, (page, low) in enumerate(zip(pages, lowered, strict=True), start=1):
        for hit, quote_from in _page_hits(page, low, names[number - 1], cis_hits[number - 1],
                                          about=about, iso_named=iso_named):
            if hit.framework in wanted:
                found.setdefault((hit.framework, hit.cid), []).append((number, hit, quote_from))
    ordered = sorted(found, key=lambda k: (FRAMEWORKS.index(k[0]), natural_key(k[1])))
    return [{"id": cid, "framework": fw, "count": len(found[(fw, cid)]),
             "pages": sorted({n for n, _, _ in found[(fw, cid)]}),
             "occurrences": [{"page": n, "text": pages[n - 1][h.start:h.end],
                              "context": _context(pages[n - 1], h.start, h.end, quote_from)}
                             for n, h, quote_from in found[(fw, cid)][:MAX_OCCURRENCES]]}
            for fw, cid in ordered]


def mentioned(framework: str, pages: Iterable[str]) -> bool:
    """Whether text names the framework as a whole word, case aside: ``ISO 27001``,
    ``ISO/IEC 27001``, ``Annex A control``; ``NIST``, ``SP 800-53``; ``SOC 2``, ``SOC II``,
    ``trust services criteria``; ``CIS Controls``, ``CIS Benchmark``."""
    return any(r.kind == framework for page in pages for r in _name_refs(_lower(page)))


def natural_key(control_id: str) -> tuple[str | int, ...]:
    """Sort key that orders ``AC-2`` < ``AC-2(1)`` < ``AC-10`` and ``A.5.2`` < ``A.5.15``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", control_id))


def _lower(text: str) -> str:
    """``text`` lowercased with the offsets of ``text`` (only ``İ`` grows when lowercased: then
    only ASCII letters are)."""
    low = text.lower()
    return low if len(low) == len(text) else text.translate(_ASCII_LOWER)


def _is_word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def _starts_word(text: str, start: int) -> bool:
    return start == 0 or not _is_word_char(text[start - 1])


def _page_hits(page: str, low: str, names: list[_Ref], cis: list[_Hit], *, about: bool,
               iso_named: bool) -> Iterator[tuple[_Hit, int]]:
    """The IDs on one page that count, each with where a quote of it starts: the hit itself, or
    the reference that makes a bare number an ISO control."""
    nist, iso = list(_nist_hits(page)), list(_iso_hits(page))
    dotted = list(_dotted_hits(page))
    cc = [h for h in dotted if h.framework == SOC2 and h.cid.startswith("CC")]
    iso = [h for h in iso if _word_before(low, h.start) not in _SECTION_WORDS]
    counted = nist + iso + cc + cis if about else cis
    yield from ((h, h.start) for h in counted)
    gated = [h for h in dotted if h.framework == SOC2 and not h.cid.startswith("CC")]
    # a page that writes Annex A controls as A.5.15 has no bare ones (iso_named implies about)
    bare = [h for h in dotted if h.framework == ISO] if iso_named and not iso else []
    if not gated and not bare:
        return
    starts = _sentence_starts(page)
    if gated:
        sentences = {starts[bisect_right(starts, r.start) - 1] for r in names if r.kind == SOC2}
        if about:
            sentences.update(starts[bisect_right(starts, h.start) - 1] for h in cc)
        yield from ((h, h.start) for h in gated if starts[bisect_right(starts, h.start) - 1] in sentences)
    if bare:
        explicit = sorted(nist + cis + [h for h in dotted if h.framework == SOC2], key=lambda h: h.start)
        refs = sorted([*names, *_other_refs(low), *(_Ref(h.end, h.start, h.framework) for h in explicit)])
        ref_ends, explicit_starts = [r.end for r in refs], [h.start for h in explicit]
        for h in bare:
            if _inside(explicit, explicit_starts, h.start):
                continue  # the 6.4 of "CIS Safeguard 6.4"
            i = bisect_right(ref_ends, h.start) - 1
            sentence = starts[bisect_right(starts, h.start) - 1]
            if i >= 0 and refs[i].start >= sentence and refs[i].kind in (ISO, _ANNEX_A):
                # quote from "ISO/IEC 27001:2022" in "ISO/IEC 27001:2022 Annex A controls 5.15"
                while i > 0 and refs[i - 1].kind in (ISO, _ANNEX_A) and refs[i - 1].start >= sentence \
                        and refs[i].start - refs[i - 1].end <= 8:
                    i -= 1
                yield h, refs[i].start


def _inside(hits: list[_Hit], starts: list[int], position: int) -> bool:
    """Whether ``position`` lies inside one of ``hits`` (sorted by start, short, hardly
    overlapping; ``starts`` are their starts)."""
    i = bisect_right(starts, position)
    return any(h.start < position < h.end for h in hits[max(0, i - 2):i])


def _name_refs(low: str) -> Iterator[_Ref]:
    """Where lowercased page text names a framework (or another ISO standard, or a lone "cis")."""
    for m in _ISO_NAME_RE.finditer(low):
        if _starts_word(low, m.start()):
            yield _Ref(m.end(), m.start(), ISO if m.group(1) == "27001" else _OTHER)
    for m in _ANNEX_A_RE.finditer(low):
        if _starts_word(low, m.start()):
            yield _Ref(m.end(), m.start(), ISO if m.group(1) else _ANNEX_A)
    for pattern, kind in _NAME_RES:
        for m in pattern.finditer(low):
            if _starts_word(low, m.start()):
                yield _Ref(m.end(), m.start(), kind)
    for m in _CIS_NAME_RE.finditer(low):
        if _starts_word(low, m.start()):
            yield _Ref(m.end(), m.start(), CIS if m.group(1) else _OTHER)


def _other_refs(low: str) -> Iterator[_Ref]:
    """Other frameworks' names and words that number something else (section, clause, page...)."""
    for m in _OTHER_REF_RE.finditer(low):
        if _starts_word(low, m.start()):
            yield _Ref(m.end(), m.start(), _OTHER)


def _sentence_starts(text: str) -> list[int]:
    """Where the sentences of a flattened page start (module docstring), 0 first."""
    starts = [0]
    for m in _SENTENCE_END_RE.finditer(text):
        after = text[m.end():m.end() + 1]
        if not after or not (after.isupper() or after.isdigit() or after in "([\"'“‘"):
            continue
        if m.group()[0] == ".":
            word = text[max(0, m.start() - 12):m.start()].rsplit(" ", 1)[-1].lstrip("([\"'“‘").lower()
            if (len(word) == 1 and word.isalpha()) or word in _ABBREVIATIONS:
                continue
        starts.append(m.end())
    return starts


def _word_before(low: str, start: int) -> str:
    """The word right before ``start``, without the punctuation around it."""
    words = low[max(0, start - 16):start].split()
    return words[-1].strip(".,:;()[]") if words else ""


def _context(text: str, start: int, end: int, quote_from: int, width: int = 40) -> str:
    """The words around ``text[start:end]``, from ``quote_from`` if that is before ``start``
    (a reference, at most 150 characters before)."""
    lo = quote_from if 0 < start - quote_from <= 150 else max(0, start - width)
    if lo > 0 and text[lo - 1] != " ":  # back to the start of the word
        lo = text.rfind(" ", 0, lo) + 1
    hi = text.find(" ", min(len(text), end + width))  # on to the end of the word
    hi = len(text) if hi == -1 else hi
    return ("…" if lo > 0 else "") + text[lo:hi] + ("…" if hi < len(text) else "")


def _nist_hits(text: str) -> Iterator[_Hit]:
    if not text.isascii():
        for mark in _DASHES:
            text = text.replace(mark, "-")
    for m in _NIST_RE.finditer(text):
        dash = m.start()
        family = text[dash - 2:dash]
        # HVAC-2000, X-AC-2: the family must be a word of its own
        if family not in NIST_FAMILIES or not _starts_word(text, dash - 2) or text[dash - 3:dash - 2] == "-":
            continue
        control, enhancement = int(m.group(1)), m.group(2)
        if control <= NIST_FAMILIES[family]:
            cid = f"{family}-{control}" + (f"({int(enhancement)})" if enhancement else "")
            yield _Hit(NIST, cid, dash - 2, m.end())


def _iso_hits(text: str) -> Iterator[_Hit]:
    for m in _ISO_A_RE.finditer(text):
        if not _starts_word(text, m.start()) or text[m.start() - 1:m.start()] == ".":
            continue
        clause, second, third = int(m.group(1)), int(m.group(2)), m.group(3)
        if third is None:
            if ISO_2022.get(clause, 0) >= second:
                yield _Hit(ISO, f"A.{clause}.{second}", m.start(), m.end())
        else:
            categories = ISO_2013.get(clause, ())
            if second <= len(categories) and 1 <= int(third) <= categories[second - 1]:
                yield _Hit(ISO, f"A.{clause}.{second}.{int(third)}", m.start(), m.end())


def _dotted_hits(text: str) -> Iterator[_Hit]:
    """Bare ISO 2022 numbers (``5.15`` -> ``A.5.15``, not yet checked against their context)
    and SOC 2 criteria (``CC6.1``): both are a short word, a dot and a number; the word
    before the dot tells which."""
    for m in _DOTTED_RE.finditer(text):
        dot = start = m.start()
        while start > 0 and dot - start < 4 and _is_word_char(text[start - 1]):
            start -= 1
        before = text[start - 1] if start > 0 else " "
        if _is_word_char(before) or before == ".":  # the word is longer, or 1.5.15
            continue
        head, number = text[start:dot], int(m.group(1))
        if len(head) == 1 and head in "5678":
            clause = int(head)
            if number <= ISO_2022[clause] and before not in _NOT_BEFORE_BARE \
                    and not _looks_like_quantity(text, start, m.end()):
                yield _Hit(ISO, f"A.{clause}.{number}", start, m.end())
        elif _SOC2_SERIES_RE.fullmatch(head) and number <= SOC2_CRITERIA.get(head, 0):
            yield _Hit(SOC2, f"{head}.{number}", start, m.end())


def _looks_like_quantity(text: str, start: int, end: int) -> bool:
    """Whether the number at ``text[start:end]`` has a unit, currency, time or version word
    right before or after it (``€ 5.15``, ``version 5.15``, ``5.15%``, ``8.30 am``)."""
    before = text[max(0, start - 12):start].split()
    if before and before[-1].lower().rstrip(":") in _NOT_ISO_BEFORE:
        return True
    after = text[end:end + 12]
    if after[:1] in _NOT_ISO_AFTER:  # 5.15% 5.15€
        return True
    words = after.split()
    return bool(words) and after[:1] == " " and words[0].lower().rstrip(".,;:)") in _NOT_ISO_AFTER


def _cis_hits(text: str) -> Iterator[_Hit]:
    for m in _CIS_RE.finditer(text):
        if not _starts_word(text, m.start()):
            continue
        control, safeguard = int(m.group(1)), m.group(2)
        if control not in CIS_SAFEGUARDS:
            continue
        if safeguard is None:
            yield _Hit(CIS, f"CIS {control}", m.start(), m.end())
        elif int(safeguard) <= CIS_SAFEGUARDS[control]:
            yield _Hit(CIS, f"CIS {control}.{int(safeguard)}", m.start(), m.end())
