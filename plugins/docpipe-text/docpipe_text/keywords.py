"""``text.keywords``: keyword and phrase counts from lists, and audit-framework control IDs.

Keywords are found in one pass over each page with an Aho-Corasick automaton
(pyahocorasick) holding every keyword of every list, so the cost grows with the
length of the text, not with text length x number of keywords as a loop of ``in``
tests or one regex per keyword would. The automaton is built once per worker and
params in ``setup``.

Matching rules:

* case-insensitive (both sides Unicode-casefolded) and NFKC-normalised, so the
  ``ﬁ`` ligature of a PDF reads as ``fi``;
* whitespace-insensitive: every run of whitespace in the text and in the keyword
  is one space, so a phrase broken across lines matches; a phrase broken across
  pages does not (pages are matched one by one, for ``keyword_pages``);
* whole words: the characters right before and after a match must not be letters,
  digits or ``_`` (the rule of the regex ``(?<!\\w)keyword(?!\\w)``): ``log`` does not
  match in ``login`` or ``catalog``;
* every keyword is counted on its own, as a regex search for it would count it:
  ``access control`` and ``access control policy`` both count in "access control
  policy"; two occurrences of the same keyword never overlap.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from docpipe.blocks import Block, Manifest, Result, State, page_list
from docpipe.errors import BlockFailed
from docpipe_text.controls import FRAMEWORKS, Framework, find_controls
from docpipe_text.textnorm import flatten


def builtin_list_names() -> list[str]:
    """The names of the keyword lists shipped in ``docpipe_text/lists`` (file names less ``.txt``)."""
    folder = resources.files("docpipe_text").joinpath("lists")
    return sorted(f.name[:-4] for f in folder.iterdir() if f.name.endswith(".txt"))


def read_builtin_list(name: str) -> str:
    return resources.files("docpipe_text").joinpath("lists").joinpath(f"{name}.txt").read_text(encoding="utf-8")


def parse_keywords(text: str) -> list[str]:
    """The keywords of a list file: one per line, blank lines and lines starting with ``#``
    skipped, surrounding whitespace stripped and inner runs of whitespace made one space.
    A ``#`` later in a line is part of the keyword (``C#``)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(" ".join(line.split()))
    return out


class KeywordMatcher:
    """Every keyword of some lists in one Aho-Corasick automaton."""

    def __init__(self, keywords: Iterable[str]) -> None:
        import ahocorasick

        #: the keywords as first spelt in the lists, by id; duplicates (after
        #: normalisation) keep their first spelling
        self.keywords: list[str] = []
        self._automaton: Any = ahocorasick.Automaton()
        for keyword in keywords:
            key = flatten(keyword).casefold()
            if key and key not in self._automaton:
                self._automaton.add_word(key, (len(self.keywords), len(key)))
                self.keywords.append(keyword)
        if self.keywords:
            self._automaton.make_automaton()

    def count_page(self, text: str) -> dict[int, int]:
        """Occurrences per keyword id in ``text`` (a page text through
        :func:`~docpipe_text.textnorm.flatten`, then casefolded): whole words only, no two
        occurrences of one keyword overlapping."""
        counts: dict[int, int] = {}
        if not self.keywords:
            return counts
        # padded, so every match has a character on each side (keywords never start or
        # end with a space); the checks are inlined: this loop runs once per raw hit
        padded = f" {text} "
        last_end: dict[int, int] = {}
        for end, (kid, length) in self._automaton.iter(padded):
            start = end - length + 1
            before, after = padded[start - 1], padded[end + 1]
            if before.isalnum() or after.isalnum() or before == "_" or after == "_":
                continue  # part of a longer word
            if last_end.get(kid, -1) >= start:
                continue  # overlaps the previous occurrence of the same keyword
            last_end[kid] = end
            counts[kid] = counts.get(kid, 0) + 1
        return counts

    def count(self, pages: Iterable[str]) -> tuple[dict[str, int], dict[str, list[int]]]:
        """``keywords`` (keyword -> count) and ``keyword_pages`` (keyword -> 1-based pages)
        over ``pages`` (flattened, casefolded page texts), holding only the keywords found, in list order."""
        totals: dict[int, int] = {}
        where: dict[int, list[int]] = {}
        for number, page in enumerate(pages, start=1):
            for kid, n in self.count_page(page).items():
                totals[kid] = totals.get(kid, 0) + n
                where.setdefault(kid, []).append(number)
        found = sorted(totals)
        return ({self.keywords[k]: totals[k] for k in found},
                {self.keywords[k]: where[k] for k in found})


class Keywords(Block):
    """Counts keywords and phrases from lists, and finds control IDs of NIST SP 800-53,
    ISO/IEC 27001 Annex A, SOC 2 and CIS Controls, each only where the text names its
    framework (rules: :mod:`docpipe_text.controls`)."""

    manifest = Manifest(
        name="text.keywords",
        version="1.0",
        reads={"page_texts": list[str]},
        writes={
            "keywords": dict[str, int],
            "keyword_pages": dict[str, list[int]],
            "control_ids": list[dict],
            "control_id_count": int,
        },
        # one automaton pass and a few compiled regexes: ~1 ms for a 50 KB document
        runtime="thread",
        # pure Python holding the GIL: one thread (up to 14 cores; see text.language)
        cost=0.1,
        description=(
            "keywords: keyword -> count (found ones only); keyword_pages: keyword -> pages "
            "(1-based); control_ids: one {id, framework, count, pages, occurrences} per distinct "
            "control ID that counts where it stands (its framework named there), occurrences "
            "quoting the first 3 as {page, text, context}; control_id_count: number of distinct "
            "control IDs."
        ),
    )

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

        keyword_files: list[str] = Field(
            default_factory=list,
            description="UTF-8 text files, one keyword or phrase per line, '#' starts a comment line",
        )
        builtin_lists: list[str] = Field(
            default_factory=lambda: ["security-controls"],
            description="keyword lists shipped with docpipe-text, by name",
        )
        controls: bool = Field(default=True, description="find control IDs of audit frameworks")
        frameworks: list[Framework] = Field(
            default_factory=lambda: list(FRAMEWORKS),
            description="which frameworks' control IDs to find",
        )

        @field_validator("builtin_lists")
        @classmethod
        def _known_lists(cls, names: list[str]) -> list[str]:
            known = builtin_list_names()
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(f"unknown built-in keyword list(s) {unknown}; available: {known}")
            return names

        @field_validator("keyword_files")
        @classmethod
        def _files_exist(cls, paths: list[str]) -> list[str]:
            missing = [p for p in paths if not Path(p).is_file()]
            if missing:
                raise ValueError(f"keyword file(s) not found: {missing} (relative paths are "
                                 f"taken from the working directory, {Path.cwd()})")
            return paths

    def __init__(self) -> None:
        self._matchers: dict[str, KeywordMatcher] = {}

    def setup(self, params: BaseModel) -> None:
        """Read the keyword lists and build their automaton."""
        self._matcher(params)

    def _matcher(self, params: BaseModel) -> KeywordMatcher:
        assert isinstance(params, Keywords.Params)
        key = params.model_dump_json(include={"keyword_files", "builtin_lists"})
        matcher = self._matchers.get(key)
        if matcher is None:
            keywords: list[str] = []
            for name in params.builtin_lists:
                keywords += parse_keywords(read_builtin_list(name))
            for path in params.keyword_files:
                try:
                    keywords += parse_keywords(Path(path).read_text(encoding="utf-8-sig"))
                except (OSError, UnicodeDecodeError) as exc:
                    raise ValueError(f"cannot read keyword file {path!r}: {exc}") from exc
            matcher = self._matchers[key] = KeywordMatcher(keywords)
        return matcher

    def run(self, batch: list[State], params: Any) -> list[Result]:
        matcher = self._matcher(params)
        results: list[Result] = []
        for state in batch:
            pages = page_list(state["page_texts"])
            if isinstance(pages, BlockFailed):
                results.append(pages)
                continue
            flat = [flatten(p) for p in pages]
            folded = [p.casefold() for p in flat]
            keywords, keyword_pages = matcher.count(folded)
            controls = find_controls(flat, params.frameworks) if params.controls else []
            results.append({"keywords": keywords, "keyword_pages": keyword_pages,
                            "control_ids": controls, "control_id_count": len(controls)})
        return results
