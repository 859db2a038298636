"""Rebuild ``models/data/doctype_assembled.jsonl``: real text from Debian packages, for the
``other`` class (text that is none of the ten document types) and, from manual pages, for
``manual``. Not part of ``make models``: the assembled text is committed, so building needs
none of these packages. Run it on Debian 12 (bookworm) with the packages below installed:

    python models/data/assemble.py

Every row names its source file and the licence the package's ``copyright`` file gives for
it. Nothing comes from test resources, from the PDFs of ``models/eval`` or from the TeX
Live documentation packages the evaluation set is drawn from.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "doctype_assembled.jsonl"
#: characters per excerpt: a little more than the 256 tokens the classifier sees
SIZE = 1800

#: (label, path, licence, excerpts, what)
SOURCES: list[tuple[str, str, str, int, str]] = [
    # change logs and release notes: none of the ten types
    ("other", "/usr/share/doc/bash/CHANGES.gz", "GPL-3+ (bash)", 3, "change log"),
    ("other", "/usr/share/doc/bash/NEWS.gz", "GPL-3+ (bash)", 2, "release notes"),
    ("other", "/usr/share/doc/bash/COMPAT.gz", "GPL-3+ (bash)", 1, "compatibility notes"),
    ("other", "/usr/share/doc/bash/POSIX.gz", "GPL-3+ (bash)", 1, "standards notes"),
    # program source code
    ("other", "/usr/lib/python3.11/textwrap.py", "PSF-2.0 (CPython)", 2, "Python source"),
    ("other", "/usr/lib/python3.11/csv.py", "PSF-2.0 (CPython)", 1, "Python source"),
    ("other", "/usr/lib/python3.11/colorsys.py", "PSF-2.0 (CPython)", 1, "Python source"),
    ("other", "/usr/lib/python3.11/calendar.py", "PSF-2.0 (CPython)", 2, "Python source"),
    ("other", "/usr/lib/python3.11/statistics.py", "PSF-2.0 (CPython)", 2, "Python source"),
    ("other", "/usr/lib/python3.11/heapq.py", "PSF-2.0 (CPython)", 1, "Python source"),
    # tables of data
    ("other", "/usr/share/zoneinfo/zone1970.tab", "public domain (tzdata)", 2, "data table"),
    ("other", "/usr/share/zoneinfo/iso3166.tab", "public domain (tzdata)", 1, "data table"),
    # manual pages: reference manuals of programs
    ("manual", "/usr/share/man/man1/ls.1.gz", "GPL-3+ (coreutils)", 1, "manual page"),
    ("manual", "/usr/share/man/man1/cp.1.gz", "GPL-3+ (coreutils)", 1, "manual page"),
    ("manual", "/usr/share/man/man1/tar.1.gz", "GPL-3+ (tar)", 1, "manual page"),
    ("manual", "/usr/share/man/man1/grep.1.gz", "GPL-3+ (grep)", 1, "manual page"),
    ("manual", "/usr/share/man/man1/sed.1.gz", "GPL-3+ (sed)", 1, "manual page"),
    ("manual", "/usr/share/man/man1/find.1.gz", "GPL-3+ (findutils)", 1, "manual page"),
    ("manual", "/usr/share/man/man1/gzip.1.gz", "GPL-3+ (gzip)", 1, "manual page"),
    ("manual", "/usr/share/man/man1/bash.1.gz", "GPL-3+ (bash)", 1, "manual page"),
]


def read(path: Path) -> str:
    if "/man/" in str(path):
        env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
        out = subprocess.run(["man", "-l", str(path)], capture_output=True, text=True, env=env,
                             check=True).stdout
        return re.sub(r".\x08", "", out)  # overstrike (bold, underline)
    raw = gzip.open(path, "rt", encoding="utf-8", errors="replace").read() if path.suffix == ".gz" \
        else path.read_text(encoding="utf-8", errors="replace")
    return raw


def excerpts(text: str, n: int) -> list[str]:
    """``n`` excerpts of about ``SIZE`` characters, spread evenly, each starting at a line."""
    lines = text.splitlines(keepends=True)
    starts = [round(i * len(lines) / n) for i in range(n)]
    out = []
    for start in starts:
        chunk = ""
        for line in lines[start:]:
            if len(chunk) + len(line) > SIZE:
                break
            chunk += line
        out.append(chunk.strip("\n"))
    return out


def main() -> int:
    rows = []
    for label, source, licence, n, what in SOURCES:
        path = Path(source)
        for i, text in enumerate(excerpts(read(path), n), 1):
            name = path.name.removesuffix(".gz")
            rows.append({"id": f"{label}-{name}-{i}", "label": label, "lang": "en",
                         "source": f"Debian 12: {source} ({what})", "licence": licence,
                         "text": text})
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"assemble: {len(rows)} texts -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
