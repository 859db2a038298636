"""One document through flows/idp.json, cold, as a new user runs it: the wall time of the
whole ``docpipe run`` command (start, pools, models, work, shutdown).

    .venv/bin/python benchmarks/one_document.py [--rounds 3] [--doc samples/invoice.pdf]

Two ways, interleaved round by round so machine noise hits both alike:
``lazy`` (DOCPIPE_FAST_START=0: each pool starts with --workers workers when its first input
arrives, as before) and ``prestart`` (the default: every pool the flow needs starts at once,
with no more workers than the batch has documents).
Prints the median of each and their ratio. The target (issue 14): under 8 s cold on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCPIPE = str(Path(sys.executable).parent / "docpipe")


def once(doc: str, prestart: bool, folder: Path) -> float:
    env = {**os.environ, "DOCPIPE_FAST_START": "1" if prestart else "0", "DOCPIPE_PDF_PASSWORD": "docpipe"}
    db = folder / f"{time.monotonic_ns()}.db"
    t0 = time.perf_counter()
    subprocess.run([DOCPIPE, "run", str(ROOT / "flows" / "idp.json"), doc, "--db", f"sqlite:///{db}", "-q"],
                   env=env, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--doc", default=str(ROOT / "samples" / "invoice.pdf"))
    args = parser.parse_args()
    times: dict[str, list[float]] = {"lazy": [], "prestart": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name in times:
                times[name].append(once(args.doc, name == "prestart", Path(tmp)))
    lazy, pre = statistics.median(times["lazy"]), statistics.median(times["prestart"])
    print(json.dumps({"doc": Path(args.doc).name, "rounds": args.rounds, "load": os.getloadavg()[0],
                      "lazy_s": [round(t, 2) for t in times["lazy"]],
                      "prestart_s": [round(t, 2) for t in times["prestart"]],
                      "median_lazy_s": round(lazy, 2), "median_prestart_s": round(pre, 2),
                      "ratio_prestart_over_lazy": round(pre / lazy, 2)}, indent=1))


if __name__ == "__main__":
    main()
