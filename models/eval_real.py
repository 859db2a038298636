"""How ``hf.classify`` does on real documents: ``models/eval/real_docs.jsonl``.

    python models/eval_real.py [--model models/doctype] [--json out.json] [--quiet]

The set holds the text of real PDFs (what docpipe's ``pdf.text`` reads from them) from
Debian's TeX Live documentation packages, each labelled by reading it, with its source and
licence (``models/eval/extract_real.py`` rebuilds it). Labels are the classifier's ten
types, or ``other``: a document of none of them. None of these documents, and nothing from
the CTAN packages they come from, is in the training data (``models/data``). With
``--data models/eval/frozen_docs.jsonl`` it measures the frozen second set
(``models/data/assemble_real.py``).

It runs the block itself (``docpipe_hf.classify.Classify``, default params unless
``--windows`` or ``--min-score`` say otherwise) and reports:

* accuracy on the documents of the ten types (``unknown`` and ``other`` count as wrong);
* for the ``other`` documents, the share that got one of the ten types with a score of 0.5
  or more (a confident wrong label), and the share that came out ``other`` or ``unknown``;
* a line per document.
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
EVAL = HERE / "eval" / "real_docs.jsonl"
OTHER = "other"
#: a score at or above this is "confident" (the issue's measure of out-of-domain harm)
CONFIDENT = 0.5


def load(path: Path = EVAL) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    for row in rows:
        missing = {"id", "label", "lang", "source", "licence", "text"} - row.keys()
        if missing:
            raise ValueError(f"{path}: {row.get('id')} lacks {sorted(missing)}")
    return rows


def classify(rows: list[dict[str, Any]], model: str | None, **params: Any,
             ) -> list[dict[str, Any]]:
    """``hf.classify``'s results for ``rows``: default params unless ``params`` say otherwise
    (``windows``, ``min_score``)."""
    from docpipe_hf.classify import Classify

    block = Classify()
    params = Classify.Params(model=model, **{k: v for k, v in params.items() if v is not None})
    block.setup(params)
    try:
        return block.run([{"full_text": r["text"]} for r in rows], params)  # type: ignore[return-value]
    finally:
        block.teardown()


def score(rows: list[dict[str, Any]], results: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures: accuracy on the ten types (overall and per label), and what happened to
    the documents of none of them."""
    typed = [(r, o) for r, o in zip(rows, results, strict=True) if r["label"] != OTHER]
    ood = [(r, o) for r, o in zip(rows, results, strict=True) if r["label"] == OTHER]
    per_label: dict[str, list[int]] = {}
    for r, o in typed:
        hit = per_label.setdefault(r["label"], [0, 0])
        hit[0] += o["doc_class"] == r["label"]
        hit[1] += 1
    confident = [r["id"] for r, o in ood
                 if o["doc_class"] not in (OTHER, "unknown") and o["doc_class_score"] >= CONFIDENT]
    return {
        "documents": len(rows), "typed": len(typed), "out_of_domain": len(ood),
        "accuracy_ten_types": round(sum(o["doc_class"] == r["label"] for r, o in typed)
                                    / max(1, len(typed)), 4),
        "accuracy_by_label": {k: v for k, v in sorted(per_label.items())},
        "ood_confident_share": round(len(confident) / max(1, len(ood)), 4),
        "ood_confident": confident,
        "ood_abstained_share": round(sum(o["doc_class"] in (OTHER, "unknown") for _, o in ood)
                                     / max(1, len(ood)), 4),
        "per_document": [{"id": r["id"], "label": r["label"], "doc_class": o["doc_class"],
                          "score": round(o["doc_class_score"], 3)}
                         for r, o in zip(rows, results, strict=True)],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model folder (default: hf.classify's default)")
    ap.add_argument("--data", type=Path, default=EVAL, help="labelled documents (JSON lines)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--windows", type=int, default=None, help="hf.classify's windows param")
    ap.add_argument("--min-score", type=float, default=None, help="hf.classify's min_score")
    ap.add_argument("-q", "--quiet", action="store_true", help="no line per document")
    args = ap.parse_args(argv)
    rows = load(args.data)
    figures = score(rows, classify(rows, args.model, windows=args.windows,
                                   min_score=args.min_score))
    if not args.quiet:
        for d in figures["per_document"]:
            mark = "ok " if d["doc_class"] == d["label"] else "-- "
            print(f"{mark}{d['id']:<45} {d['label']:<19} {d['doc_class']:<19} {d['score']:.2f}")
    by = ", ".join(f"{k} {a}/{n}" for k, (a, n) in figures["accuracy_by_label"].items())
    print(f"eval_real: {figures['typed']} documents of the ten types: accuracy "
          f"{figures['accuracy_ten_types']:.3f} ({by})")
    print(f"eval_real: {figures['out_of_domain']} documents of none of them: "
          f"{len(figures['ood_confident'])} got a type with score >= {CONFIDENT} "
          f"({figures['ood_confident_share']:.2f}); {figures['ood_abstained_share']:.2f} "
          f"came out other or unknown")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
