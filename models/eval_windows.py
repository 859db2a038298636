"""How many windows ``hf.classify`` should read, and how to combine them: measured on the
real-document set, on its full texts (re-read from the PDFs when they are installed) and on
the held-out split of the training data. Not part of the build; the model card reports it.

    python models/eval_windows.py [--model models/doctype] [--full] [--max-windows 5]

For each number of windows (1 .. ``--max-windows``), each layout (``consecutive``: what
``hf.classify`` reads, the first windows one after the other; ``spread``: the first window
and later ones evenly spaced over the whole text, measured and dropped) and each way of
combining them (the mean of the windows' probabilities, which the block uses, or of their
logits), it prints accuracy on the ten types
and, for the documents of none of them, how many got a type with a score of 0.5 or more.
``--full`` reads every document of ``models/eval/real_docs.jsonl`` again from its source PDF
(Debian's TeX Live documentation; skipped when it is not installed): the committed text is
cut at 4,000 characters, the PDFs are not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TEX = Path("/usr/share/doc/texlive-doc/latex")
CONFIDENT = 0.5


def full_texts(rows: list[dict[str, Any]], cache: Path) -> list[dict[str, Any]] | None:
    """The rows with their whole text, as pdf.text reads the source PDF (cached in ``cache``)."""
    if cache.exists():
        return [json.loads(line) for line in cache.read_text(encoding="utf-8").splitlines()]
    sys.path.insert(0, str(ROOT / "plugins" / "docpipe-pdf"))
    from docpipe_pdf.text import PdfText, read_document

    out = []
    for r in rows:
        rel = r["source"].split(": ", 1)[1]
        path = Path(rel) if rel.startswith("/") else TEX / rel
        if not path.exists():
            print(f"eval_windows: {path} is not installed; no --full figures", file=sys.stderr)
            return None
        out.append({**r, "text": read_document(str(path), PdfText.Params())["text"]})
    cache.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out),
                     encoding="utf-8")
    return out


def spread(text: str, max_tokens: int, windows: int) -> list[str]:
    """The first window, then ``windows - 1`` starting at evenly spaced points of the text."""
    from docpipe_hf.classify import CHARS_PER_TOKEN, clip_text

    flat = " ".join(text.split())
    n = min(windows, -(-len(flat) // (max_tokens * CHARS_PER_TOKEN)))
    starts = [flat.find(" ", len(flat) * k // n) + 1 for k in range(1, n)]
    return [clip_text(text, max_tokens)] + [flat[s:s + max_tokens * 16] for s in starts if s]


def window_logits(block: Any, params: Any, texts: list[str], windows: int, layout: str,
                  ) -> list[Any]:
    """Per text, the logits of each window read (``[windows, labels]``)."""
    from docpipe_hf.classify import too_little_text, windows_of

    parts, owner = [], []
    for i, text in enumerate(texts):
        mine = (windows_of if layout == "consecutive" else spread)(text, block.max_tokens, windows)
        mine = mine[:1] + [p for p in mine[1:] if not too_little_text(p, params.min_chars)]
        parts += mine
        owner += [i] * len(mine)
    import torch

    with torch.inference_mode():
        out = block._forward(parts, params)
    return [out[[j for j, o in enumerate(owner) if o == i]] for i in range(len(texts))]


def figures(rows: list[dict[str, Any]], labels: list[str], logits: list[Any], how: str,
            ) -> tuple[int, int, int, int]:
    """(right on the ten types, typed, other documents typed at >= 0.5, other documents)."""
    right = typed = loud = ood = 0
    for r, lg in zip(rows, logits, strict=True):
        probs = lg.softmax(-1).mean(0) if how == "probs" else lg.mean(0).softmax(-1)
        score, k = float(probs.max()), int(probs.argmax())
        if r["label"] == "other":
            ood += 1
            loud += labels[k] != "other" and score >= CONFIDENT
        else:
            typed += 1
            right += labels[k] == r["label"]
    return right, typed, loud, ood


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--full", action="store_true", help="also the full texts of the PDFs")
    ap.add_argument("--max-windows", type=int, default=5)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/docpipe-real-docs-full.jsonl"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import build_doctype
    import eval_real
    from docpipe_hf.classify import Classify

    sets = {"real_docs (4,000 chars)": eval_real.load(),
            "held-out split": build_doctype.split(build_doctype.load_rows())[1]}
    if args.full:
        full = full_texts(eval_real.load(), args.cache)
        if full:
            sets["real_docs (full text)"] = full
    block = Classify()
    params = Classify.Params(model=args.model, windows=1)
    block.setup(params)
    for name, rows in sets.items():
        for layout in ("consecutive", "spread"):
            for w in range(1 if layout == "consecutive" else 2, args.max_windows + 1):
                logits = window_logits(block, params, [r["text"] for r in rows], w, layout)
                read = sum(len(lg) for lg in logits)
                line = []
                for how in ("probs", "logits"):
                    right, typed, loud, ood = figures(rows, block.labels, logits, how)
                    line.append(f"mean of {how}: {right}/{typed} right, {loud}/{ood} other "
                                f"typed at >= {CONFIDENT}")
                print(f"eval_windows: {name}, {layout}, windows {w} ({read} read): "
                      + "; ".join(line), flush=True)
    block.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
