"""Control IDs of four audit frameworks, found in page text with regexes compiled once.

Each framework's IDs are matched by shape, then checked against the framework's real
numbering (a table below), so a number that merely looks like an ID is dropped:

* **NIST SP 800-53** (rev. 5): ``AC-2``, ``AC-02``, ``AC–2`` (any hyphen or en dash),
  ``AC-2(1)``, ``AC-2 (1)`` -> ``AC-2``, ``AC-2(1)``. Only the 20 real family prefixes,
  uppercase, not glued to a word or a hyphen before (``HVAC-2000``, ``X-AC-2``) and not
  followed by more digits; the control number must exist in its family (``SC-51`` does,
  ``CA-90`` does not).
* **ISO/IEC 27001** Annex A: 2013 style ``A.9.2.1`` (checked against the 114 controls of
  2013) and 2022 style ``A.5.15`` (5.1-5.37, 6.1-6.8, 7.1-7.14, 8.1-8.34). A bare ``5.15``
  counts as ``A.5.15`` only when the document mentions ISO 27001 or Annex A somewhere,
  the number is a valid 2022 control, and it is not part of something else: not a version
  (``5.15.2``, ``v5.15``), a larger number (``1,5.15``, ``-5.15``, ``15.5.15``), an amount,
  a percentage, a time or a measure (``5.15 %``, ``€ 5.15``, ``8.30 am``, ``7.5 kg``).
* **SOC 2** trust services criteria (2017): ``CC1.1``-``CC9.2`` always; ``A1.x``, ``C1.x``,
  ``PI1.x``, ``P1.x``-``P8.x`` only when the document mentions SOC 2 / trust services
  criteria or has a CC criterion (``A1.2`` alone is a paper size, ``P1.1`` a project phase).
* **CIS Controls** (v8): ``CIS 4.1``, ``CIS Control 4``, ``CIS Safeguard 4.1``, ``CIS
  Controls 4.1``, ``CIS CSC 4`` -> ``CIS 4.1`` / ``CIS 4``; control 1-18, safeguard numbers
  as in v8 (153 in all). CIS Benchmark numbers (``1.1.1``) are not CIS Controls.

Dates never match: ``2022-05-15`` has no family prefix and no dotted pair.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable, Iterator
from typing import Literal

Framework = Literal["NIST SP 800-53", "ISO/IEC 27001", "SOC 2", "CIS Controls"]
#: the frameworks, in the order ``control_ids`` lists them
FRAMEWORKS: tuple[Framework, ...] = typing.get_args(Framework)
NIST, ISO, SOC2, CIS = FRAMEWORKS

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
_DASHES = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2013": "-"})
# Every pattern starts with a literal, which the regex engine finds with a fast substring
# search; what comes *before* an ID is checked in Python. A lookbehind or a character
# class at the start of a pattern makes the engine try every position: ~10x slower.
_NIST_RE = re.compile(rf"-({_NUM})(?:\s?\(({_NUM})\))?(?!\w)(?!-\d)(?!\.\d)")
_ISO_A_RE = re.compile(rf"A\.([1-9]\d?)\.([1-9]\d?)(?:\.([1-9]\d?))?{_END}")
#: the ".15" of a bare ISO 5.15 and the ".1" of SOC 2 CC6.1; the part before the dot is checked apart
_DOTTED_RE = re.compile(rf"\.([1-9]\d?){_END}(?!,\d)")
_SOC2_SERIES_RE = re.compile(r"(?:CC|PI|A|C|P)[1-9]")
_CIS_RE = re.compile(
    r"CIS(?:\s(?i:critical\ssecurity\s)?(?i:controls?|safeguards?|sub-?controls?|csc))?"
    rf"\s#?([1-9]\d?)(?:\.([1-9]\d?))?{_END}"
)
#: mentions that open the gates (ISO: bare numbers; SOC 2: non-CC criteria), in casefolded text
_MENTION_RES: dict[str, tuple[re.Pattern[str], ...]] = {
    ISO: (re.compile(r"iso\s?(?:/\s?iec\s?)?27001(?!\d)"), re.compile(r"annex a(?!\w)")),
    SOC2: (re.compile(r"soc\s?(?:2|ii)(?!\w)"), re.compile(r"trust services? criteria(?!\w)")),
}
#: a bare ISO number may not follow these characters: 1,5.15 -5.15 +5.15 $5.15 #5.15 1/5.15
_NOT_BEFORE_BARE = frozenset(".,/#$€£¥+-_")
#: a bare ISO number next to one of these words is a quantity, a price, a time or a version
_NOT_ISO_BEFORE = frozenset({"v", "ver", "version", "release", "rel", "eur", "usd", "gbp", "chf",
                             "score", "cvss", "rating", "€", "$", "£", "¥"})
_NOT_ISO_AFTER = frozenset({"%", "‰", "°", "am", "pm", "a.m", "p.m", "h", "hrs", "hours", "uhr",
                            "s", "ms", "sec", "min", "mm", "cm", "m", "km", "kg", "g", "mb", "gb",
                            "tb", "kb", "x", "eur", "usd", "gbp", "chf", "€", "$", "£", "¥"})


def find_controls(pages: Iterable[str], frameworks: Iterable[str] = FRAMEWORKS,
                  folded: Iterable[str] | None = None) -> list[dict[str, object]]:
    """Every control ID in ``pages`` (whitespace-flattened page texts, in order) of the
    chosen frameworks: one ``{"id", "framework", "count", "pages"}`` per canonical ID,
    pages 1-based, sorted by framework (in :data:`FRAMEWORKS` order) then by number.
    ``folded`` are the same pages casefolded, if the caller has them already."""
    pages = list(pages)
    folded = [p.casefold() for p in pages] if folded is None else list(folded)
    wanted = set(frameworks)
    iso_mentioned = ISO in wanted and mentioned(ISO, folded)
    found: dict[tuple[str, str], tuple[int, set[int]]] = {}
    gated: list[tuple[int, str]] = []  # SOC 2 non-CC hits, kept if the gate opens
    for number, page in enumerate(pages, start=1):
        hits: list[tuple[str, str]] = []
        if NIST in wanted:
            hits += ((NIST, i) for i in _nist_ids(page))
        if ISO in wanted:
            hits += ((ISO, i) for i in _iso_ids(page))
        if ISO in wanted or SOC2 in wanted:
            for framework, cid in _dotted_ids(page, iso_bare=iso_mentioned, soc2=SOC2 in wanted):
                if framework == SOC2 and not cid.startswith("CC"):
                    gated.append((number, cid))
                else:
                    hits.append((framework, cid))
        if CIS in wanted:
            hits += ((CIS, i) for i in _cis_ids(page))
        for key in hits:
            count, seen = found.get(key, (0, set()))
            seen.add(number)
            found[key] = (count + 1, seen)
    if gated and (any(fw == SOC2 for fw, _ in found) or mentioned(SOC2, folded)):
        for number, criterion in gated:
            count, seen = found.get((SOC2, criterion), (0, set()))
            seen.add(number)
            found[(SOC2, criterion)] = (count + 1, seen)
    ordered = sorted(found, key=lambda k: (FRAMEWORKS.index(k[0]), natural_key(k[1])))
    return [{"id": cid, "framework": fw, "count": found[(fw, cid)][0],
             "pages": sorted(found[(fw, cid)][1])} for fw, cid in ordered]


def mentioned(framework: str, folded_pages: Iterable[str]) -> bool:
    """Whether casefolded text names the framework as a whole word: ``ISO 27001``,
    ``ISO/IEC 27001``, ``Annex A``; ``SOC 2``, ``SOC II``, ``trust services criteria``."""
    for page in folded_pages:
        for pattern in _MENTION_RES[framework]:
            if any(_starts_word(page, m.start()) for m in pattern.finditer(page)):
                return True
    return False


def natural_key(control_id: str) -> tuple[str | int, ...]:
    """Sort key that orders ``AC-2`` < ``AC-2(1)`` < ``AC-10`` and ``A.5.2`` < ``A.5.15``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", control_id))


def _is_word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def _starts_word(text: str, start: int) -> bool:
    return start == 0 or not _is_word_char(text[start - 1])


def _nist_ids(text: str) -> Iterator[str]:
    if not text.isascii():
        text = text.translate(_DASHES)
    for m in _NIST_RE.finditer(text):
        dash = m.start()
        family = text[dash - 2:dash]
        # HVAC-2000, X-AC-2: the family must be a word of its own
        if family not in NIST_FAMILIES or not _starts_word(text, dash - 2) or text[dash - 3:dash - 2] == "-":
            continue
        control, enhancement = int(m.group(1)), m.group(2)
        if control <= NIST_FAMILIES[family]:
            yield f"{family}-{control}" + (f"({int(enhancement)})" if enhancement else "")


def _iso_ids(text: str) -> Iterator[str]:
    for m in _ISO_A_RE.finditer(text):
        if not _starts_word(text, m.start()) or text[m.start() - 1:m.start()] == ".":
            continue
        clause, second, third = int(m.group(1)), int(m.group(2)), m.group(3)
        if third is None:
            if ISO_2022.get(clause, 0) >= second:
                yield f"A.{clause}.{second}"
        else:
            categories = ISO_2013.get(clause, ())
            if second <= len(categories) and 1 <= int(third) <= categories[second - 1]:
                yield f"A.{clause}.{second}.{int(third)}"


def _dotted_ids(text: str, *, iso_bare: bool, soc2: bool) -> Iterator[tuple[str, str]]:
    """Bare ISO 2022 numbers (``5.15`` -> ``A.5.15``) and SOC 2 criteria (``CC6.1``): both
    are a short word, a dot and a number; the word before the dot tells which."""
    if not (iso_bare or soc2):
        return
    for m in _DOTTED_RE.finditer(text):
        dot = start = m.start()
        while start > 0 and dot - start < 4 and _is_word_char(text[start - 1]):
            start -= 1
        before = text[start - 1] if start > 0 else " "
        if _is_word_char(before) or before == ".":  # the word is longer, or 1.5.15
            continue
        head, number = text[start:dot], int(m.group(1))
        if iso_bare and len(head) == 1 and head in "5678":
            clause = int(head)
            if number <= ISO_2022[clause] and before not in _NOT_BEFORE_BARE \
                    and not _looks_like_quantity(text, start, m.end()):
                yield ISO, f"A.{clause}.{number}"
        elif soc2 and _SOC2_SERIES_RE.fullmatch(head) and number <= SOC2_CRITERIA.get(head, 0):
            yield SOC2, f"{head}.{number}"


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


def _cis_ids(text: str) -> Iterator[str]:
    for m in _CIS_RE.finditer(text):
        if not _starts_word(text, m.start()):
            continue
        control, safeguard = int(m.group(1)), m.group(2)
        if control not in CIS_SAFEGUARDS:
            continue
        if safeguard is None:
            yield f"CIS {control}"
        elif int(safeguard) <= CIS_SAFEGUARDS[control]:
            yield f"CIS {control}.{int(safeguard)}"
