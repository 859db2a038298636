"""Each case of the hostile-input corpus (tests/hostile.py) alone through flows/idp.json:
its verdict, error kind, seconds and peak resident memory (of the CLI and every worker).

    .venv/bin/python benchmarks/hostile_corpus.py [--only NAME ...] [--markdown]

One ``docpipe run`` per case, in a fresh process, so a case's seconds include the start of
the pools it needs (the models only when the document reaches classify and NER). Prints a
table; the figures of a run are in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from hostile import CASES, PASSWORD, build, paths  # noqa: E402

DOCPIPE = str(Path(sys.executable).parent / "docpipe")
_MEASURED = """
import json, resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=900)
print(json.dumps({"rc": proc.returncode, "stderr": proc.stderr[-2000:],
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="case file names to run (default: all)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    cases = [c for c in CASES if not args.only or os.fsdecode(c.name) in args.only]
    rows = []
    with tempfile.TemporaryDirectory(prefix="docpipe-hostile-") as tmp:
        base = Path(tmp)
        shown = build(base / "corpus", cases)
        env = {**os.environ, "DOCPIPE_PDF_PASSWORD": PASSWORD, "DOCPIPE_WORK_DIR": str(base / "work"),
               "TMPDIR": str(base / "tmp")}
        (base / "tmp").mkdir()
        for case, path, name in zip(cases, paths(base / "corpus", cases), shown, strict=True):
            out = base / "r.csv"
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", _MEASURED, DOCPIPE, "run",
                                   str(ROOT / "flows" / "idp.json"), path, "--db",
                                   f"sqlite:///{base / 'runs.db'}", "--out", str(out), "-q", "-w", "1"],
                                  env=env, capture_output=True, text=True, timeout=960)
            seconds = time.perf_counter() - t0
            measured = json.loads(proc.stdout.splitlines()[-1])
            (row,) = list(csv.DictReader(out.open(encoding="utf-8")))
            verdict = row["status"] if row["status"] == "succeeded" else row["error_kind"]
            rows.append({"case": Path(name).name.replace("\n", "\\n"), "what": case.what,
                         "verdict": verdict, "expected": verdict in case.verdicts,
                         "step": row["failed_step"], "seconds": round(seconds, 1),
                         "max_rss_mb": round(measured["max_rss_mb"]),
                         "left_in_tmp": len(list((base / "tmp").iterdir()))})
            print(json.dumps(rows[-1]), file=sys.stderr)
    if args.markdown:
        print("| case | what | verdict | step | s | peak RSS MB |")
        print("| --- | --- | --- | --- | ---: | ---: |")
        for r in rows:
            mark = "" if r["expected"] else " (unexpected)"
            print(f"| `{r['case']}` | {r['what']} | {r['verdict']}{mark} | {r['step']} | "
                  f"{r['seconds']} | {r['max_rss_mb']} |")
    else:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
