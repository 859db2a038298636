"""What ``hf.classify``'s ``windows`` costs: documents per second of the block itself (setup
once, ``run`` on batches of 16 as the engine hands them over) with ``windows`` 1, 2 and 3,
on documents long enough to fill every window.

    python benchmarks/classify_windows.py [--docs 64] [--windows 1 2 3] [--precision fp32]

Documents are labelled texts of ``models/data/doctype.jsonl`` strung together to about
6,000 characters (three windows of 256 tokens need about 4,000). One process, all cores;
``benchmarks/classify_throughput.py`` measures the engine around the block.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[1] / "models" / "data" / "doctype.jsonl"


def make_texts(n: int, chars: int = 6000) -> list[str]:
    rows = [json.loads(line)["text"] for line in DATA.read_text(encoding="utf-8").splitlines()]
    texts, k = [], 0
    for _ in range(n):
        parts: list[str] = []
        while sum(map(len, parts)) < chars:
            parts.append(rows[k % len(rows)])
            k += 1
        texts.append("\n".join(parts))
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=64)
    ap.add_argument("--windows", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    from docpipe_hf.classify import Classify

    texts = make_texts(args.docs)
    for w in args.windows:
        block = Classify()
        params = Classify.Params(windows=w, precision=args.precision)
        block.setup(params)
        block.run([{"full_text": t} for t in texts[:16]], params)  # warm-up
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            for i in range(0, len(texts), 16):
                block.run([{"full_text": t} for t in texts[i:i + 16]], params)
            best = min(best, time.perf_counter() - t0)
        block.teardown()
        print(f"classify_windows: windows {w}, {args.precision}: "
              f"{len(texts) / best:.1f} docs/s ({len(texts)} documents, best of {args.repeat})",
              flush=True)


if __name__ == "__main__":
    main()
