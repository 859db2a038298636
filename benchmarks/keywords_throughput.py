"""Throughput of ``text.keywords`` against a naive matcher: one compiled regex per keyword.

    python benchmarks/keywords_throughput.py [--mb 1] [--keywords 1000] [--pages 100] [--repeat 3]

The text is generated (seeded, so every run sees the same text): pages of pseudo-words,
with keyword occurrences mixed in (about one token in fifty), in random letter case,
with some phrases broken across lines, and with keywords also glued into longer
words (``xkeyword``, ``keywords``) that must *not* count. The keywords are 1,000
distinct pseudo-words and phrases of one to three words.

* ``docpipe``: ``Keywords().run([{"page_texts": pages}], params)`` with the keywords in a
  keyword file, no built-in list and ``controls=False``: the keyword pass alone,
  normalisation included. ``docpipe_with_controls`` is the same with control-ID detection.
* ``naive_regex``: the same normalisation (``flatten`` then ``casefold``, per page), then
  for each keyword the textbook compiled regex ``\\bkeyword\\b`` counted with ``finditer``
  over each page; the same outputs (counts and pages per keyword).
* ``tuned_regex``: the same, but each regex starts with the keyword itself
  (``keyword(?!\\w)``; the left boundary is checked in Python), so the regex engine can
  find it with a fast substring search instead of trying every position: the best a
  regex per keyword can do, and a fairer baseline than the textbook one.

All must give exactly the same ``keywords`` and ``keyword_pages`` and the counts the
generator planted; otherwise the script exits 1 and its figures are void. docpipe's
measurements are the best of ``--repeat`` runs, the regex baselines' the best of
``--naive-repeat`` (default 1: they take tens of seconds). Setup (building the automaton,
compiling the regexes) is timed separately and not in the throughput. The JSON report
goes to stdout; ``ratio`` is docpipe MB/s over naive MB/s, ``ratio_vs_tuned`` over tuned,
from wall time; the ``cpu_`` figures are the same from process CPU time, which a busy
machine disturbs less (everything here runs in one thread).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from docpipe_text.keywords import Keywords
from docpipe_text.textnorm import flatten

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "zi", "po", "da", "fe", "gu", "hi",
             "jo", "be", "ci", "xo", "wa", "yu", "qe", "tri", "sto", "pla", "gre"]


def pseudo_word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))


def make_keywords(rng: random.Random, count: int) -> list[str]:
    """``count`` keywords: single pseudo-words and phrases of two or three. No word is in
    two keywords, so no keyword occurs inside another and planted counts are exact."""
    used: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        words = {pseudo_word(rng) for _ in range(rng.choice((1, 1, 2, 3)))}
        if not words & used:
            used |= words
            out.append(" ".join(sorted(words)))
    return out


def make_pages(rng: random.Random, keywords: list[str], total_chars: int,
               pages: int) -> tuple[list[str], dict[str, int]]:
    """Pages of filler with planted keyword occurrences, and how many of each were planted.

    Filler words come from a vocabulary that shares no word with the keywords, and planted
    keywords are separated by filler, so the planted counts are the true counts."""
    words_in_keywords = {w for k in keywords for w in k.split()}
    vocabulary: list[str] = []
    while len(vocabulary) < 5000:
        w = pseudo_word(rng)
        if w not in words_in_keywords:
            vocabulary.append(w)
    planted = dict.fromkeys(keywords, 0)
    per_page = total_chars // pages
    out = []
    for _ in range(pages):
        parts: list[str] = []
        size = 0
        while size < per_page:
            roll = rng.random()
            if roll < 0.02:
                keyword = rng.choice(keywords)
                planted[keyword] += 1
                token = keyword.upper() if rng.random() < 0.2 else keyword
                if " " in token and rng.random() < 0.3:
                    token = token.replace(" ", "\n", 1)  # a phrase broken across lines
            elif roll < 0.025:  # glued into a longer word: must not count
                token = rng.choice(("x", "un")) + rng.choice(keywords).replace(" ", "") + "s"
            else:
                token = rng.choice(vocabulary)
            parts.append(token)
            size += len(token) + 1
            if rng.random() < 0.08:
                parts.append("\n" if rng.random() < 0.7 else ",")
        out.append(" ".join(parts))
    return out, {k: n for k, n in planted.items() if n}


Counts = tuple[dict[str, int], dict[str, list[int]]]


def regex_per_keyword(pages: list[str], patterns: list[tuple[str, re.Pattern[str]]], *,
                      check_left: bool) -> Counts:
    """Counts and pages per keyword, one regex scan per keyword and page."""
    flat = [flatten(p).casefold() for p in pages]
    counts: dict[str, int] = {}
    where: dict[str, list[int]] = {}
    for keyword, pattern in patterns:
        for number, text in enumerate(flat, start=1):
            if check_left:
                n = sum(1 for m in pattern.finditer(text)
                        if m.start() == 0 or not (text[m.start() - 1].isalnum() or text[m.start() - 1] == "_"))
            else:
                n = sum(1 for _ in pattern.finditer(text))
            if n:
                counts[keyword] = counts.get(keyword, 0) + n
                where.setdefault(keyword, []).append(number)
    return counts, where


def best_of(repeat: int, fn: Any) -> tuple[dict[str, float], Any]:
    """The best wall time and the best CPU time of ``repeat`` calls, and the last result."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        result = fn()
        cpus.append(time.process_time() - c)
        walls.append(time.perf_counter() - w)
    return {"seconds": min(walls), "cpu_seconds": min(cpus)}, result


def figures(times: dict[str, float], mb: float, setup: float) -> dict[str, float]:
    return {"seconds": round(times["seconds"], 4), "cpu_seconds": round(times["cpu_seconds"], 4),
            "mb_per_s": round(mb / times["seconds"], 3), "cpu_mb_per_s": round(mb / times["cpu_seconds"], 3),
            "setup_seconds": round(setup, 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=1.0, help="text size in MB (10^6 characters)")
    parser.add_argument("--keywords", type=int, default=1000)
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--naive-repeat", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    keywords = make_keywords(rng, args.keywords)
    pages, planted = make_pages(rng, keywords, int(args.mb * 1e6), args.pages)
    chars = sum(len(p) for p in pages)
    mb = chars / 1e6

    with tempfile.TemporaryDirectory() as tmp:
        keyword_file = Path(tmp) / "keywords.txt"
        keyword_file.write_text("# generated\n" + "\n".join(keywords) + "\n", encoding="utf-8")
        report: dict[str, Any] = {}
        outputs: dict[str, Any] = {}
        for name, controls in (("docpipe", False), ("docpipe_with_controls", True)):
            params = Keywords.Params(keyword_files=[str(keyword_file)], builtin_lists=[], controls=controls)
            block = Keywords()
            t = time.perf_counter()
            block.setup(params)
            setup_s = time.perf_counter() - t
            seconds, (result,) = best_of(args.repeat, lambda b=block, p=params: b.run([{"page_texts": pages}], p))
            outputs[name] = (result["keywords"], result["keyword_pages"])
            report[name] = figures(seconds, mb, setup_s)

    baselines = (("naive_regex", r"\b{}\b", False), ("tuned_regex", r"{}(?!\w)", True))
    for name, shape, check_left in baselines:
        t = time.perf_counter()
        patterns = [(k, re.compile(shape.format(re.escape(k)))) for k in keywords]
        compile_s = time.perf_counter() - t
        seconds, outputs[name] = best_of(
            args.naive_repeat, lambda p=patterns, c=check_left: regex_per_keyword(pages, p, check_left=c))
        report[name] = figures(seconds, mb, compile_s)

    problems = []
    for name, (counts, where) in outputs.items():
        if counts != planted:
            wrong = [k for k in set(counts) | set(planted) if counts.get(k) != planted.get(k)]
            problems.append(f"{name}: counts differ from the planted ones for {len(wrong)} keywords")
        if where != outputs["naive_regex"][1]:
            problems.append(f"{name}: keyword_pages differ from the naive matcher's")
    report = {
        "text_mb": round(mb, 3), "pages": len(pages), "keywords": len(keywords),
        "occurrences": sum(planted.values()), "keywords_found": len(planted),
        **report,
        "ratio": round(report["naive_regex"]["seconds"] / report["docpipe"]["seconds"], 1),
        "ratio_vs_tuned": round(report["tuned_regex"]["seconds"] / report["docpipe"]["seconds"], 1),
        "cpu_ratio": round(report["naive_regex"]["cpu_seconds"] / report["docpipe"]["cpu_seconds"], 1),
        "cpu_ratio_vs_tuned": round(report["tuned_regex"]["cpu_seconds"] / report["docpipe"]["cpu_seconds"], 1),
        "checks_passed": not problems,
        "python": platform.python_version(), "machine": platform.machine(),
    }
    print(json.dumps(report, indent=2))
    for problem in problems:
        print(f"CHECK FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
