"""Round 4's experiments on the document-type classifier (model card, "Round 4"): loss
weights, more text per training document, an ``other`` bias, and fine-tuning the top encoder
layers. Not part of the build; nothing here writes a model.

    python models/eval_round4.py heads [--weight none label label-real] [--power 1]
        [--seeds 1234 1 2] [--steps 150] [--biases 0] [--win2] [--concat] [--cv] [--samples]
    python models/eval_round4.py finetune [--k 1] [--epochs 4] [--lr 5e-5] [--lr-head 1e-3]
        [--head-seed 1234] [--win2]

Both use the build's split and augmentation (``build_doctype``) and measure:

* held-out and calibration accuracy (the build's splits; calibrated with the build's
  ``temperature``), CV on the unaugmented training texts (``heads --cv``);
* the dev real set (``models/eval/real_docs.jsonl``) read as ``hf.classify`` reads it: up to
  two consecutive windows (``windows_of``), the mean of their calibrated probabilities;
  accuracy on the ten types and the ``other`` documents given a type at >= 0.5;
* ``heads --samples``: the four text samples of ``samples/`` (evaluation only).

``heads`` trains only the head, on the frozen encoder's mean-pooled layer-4 features (the
build's ``layer_features``; cached under ``--cache``): with ``--weight none --seeds 1234`` it
reproduces the build's figures. ``finetune`` trains the top ``k`` kept layers and a new head
on the cached token states of the layer below them. Never reads the frozen set.
"""

from __future__ import annotations

import argparse
import collections
import copy
import hashlib
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "plugins" / "docpipe-hf"))
sys.path.insert(0, str(HERE.parent / "plugins" / "docpipe-pdf"))

import build_doctype as B  # noqa: E402
import eval_real as E  # noqa: E402

SAMPLES = {"invoice.pdf": "invoice", "security_policy.pdf": "policy",
           "lettre_fr.pdf": "letter", "report_de.pdf": "other"}


def read_windows(rows: list[dict[str, Any]]) -> tuple[list[str], list[int]]:
    """The windows ``hf.classify`` reads (default params) and, per window, its row."""
    from docpipe_hf.classify import too_little_text, windows_of

    texts: list[str] = []
    owner: list[int] = []
    for i, r in enumerate(rows):
        parts = windows_of(r["text"], B.MAX_TOKENS, 2)
        parts = parts[:1] + [p for p in parts[1:] if not too_little_text(p, 30)]
        texts += parts
        owner += [i] * len(parts)
    return texts, owner


def second_window(row: dict[str, str]) -> dict[str, str] | None:
    texts, _ = read_windows([row])
    return {**row, "id": row["id"] + "~w2", "text": texts[1]} if len(texts) > 1 else None


def joined(fit: list[dict[str, str]]) -> list[dict[str, str]]:
    """Per written training text, one longer copy: it and two more written texts of its label
    (seeded), each dressed by ``augment``, as the pages of one document."""
    by: dict[str, list[dict[str, str]]] = collections.defaultdict(list)
    for r in fit:
        if not B.is_real(r):
            by[r["label"]].append(r)
    out = []
    for _, rows in sorted(by.items()):
        rows = sorted(rows, key=lambda r: r["id"])
        for r in rows:
            others = random.Random(f"concat:{r['id']}").sample([o for o in rows if o is not r], 2)
            parts = [B.augment(x, B.SEED + j)["text"] for j, x in enumerate([r, *others])]
            out.append({**r, "id": r["id"] + "~cat", "text": "\n".join(parts)})
    return out


def weights(rows: list[dict[str, str]], scheme: str, power: float) -> Any:
    """Loss weights: ``none``; ``label`` (1/n of the label); ``label-real`` (1/n of the
    (label, real or not) group: ``build_doctype.sample_weights`` at power 1)."""
    import torch

    if scheme == "none":
        return torch.ones(len(rows))
    keys = [(r["label"], B.is_real(r)) if scheme == "label-real" else r["label"] for r in rows]
    count = collections.Counter(keys)
    w = torch.tensor([count[k] ** -power for k in keys])
    return w / w.mean()


def dev_figures(rows: list[dict[str, Any]], owner: list[int], probs: Any, labels: list[str],
                ) -> tuple[int, int, int, int, list[tuple[str, str, str, float]]]:
    """(right on the ten types, typed, other at >= 0.5, other, per document) from the
    per-window probabilities, averaged per document as hf.classify does."""
    import torch

    rows_of = torch.tensor(owner)
    mean = torch.zeros((len(rows), probs.shape[-1])).index_add_(0, rows_of, probs)
    mean /= torch.bincount(rows_of, minlength=len(rows)).unsqueeze(-1)
    right = typed = loud = ood = 0
    per = []
    for r, p in zip(rows, mean, strict=True):
        k, score = int(p.argmax()), float(p.max())
        per.append((r["id"], r["label"], labels[k], round(score, 2)))
        if r["label"] == "other":
            ood += 1
            loud += labels[k] != "other" and score >= E.CONFIDENT
        else:
            typed += 1
            right += labels[k] == r["label"]
    return right, typed, loud, ood, per


class Setup:
    """The build's split, the texts to encode and their labels."""

    def __init__(self, win2: bool, concat: bool) -> None:
        import torch

        rows = B.load_rows()
        train, self.test = B.split(rows)
        self.fit, self.calib = B.split(train, f"{B.SEED}:calibration", B.CALIBRATION)
        self.labels = sorted({r["label"] for r in rows})
        self.seen = self.fit + [B.augment(r, B.SEED) for r in self.fit]
        if win2:
            self.seen += [w for w in map(second_window, self.fit) if w]
        if concat:
            self.seen += joined(self.fit)
        self.dev = E.load()
        self.dev_texts, self.dev_owner = read_windows(self.dev)
        self.texts = [r["text"] for r in self.seen + self.calib + self.test] + self.dev_texts

        def y(rs: list[dict[str, Any]]) -> Any:
            return torch.tensor([self.labels.index(r["label"]) for r in rs])

        self.y, self.y_calib, self.y_test = y(self.seen), y(self.calib), y(self.test)
        n, c, t = len(self.seen), len(self.calib), len(self.test)
        self.parts = (slice(0, n), slice(n, n + c), slice(n + c, n + c + t), slice(n + c + t, None))

    def report(self, name: str, lc: Any, lt: Any, ld: Any, bias: float = 0.0) -> str:
        temp = B.temperature(lc, self.y_calib)
        if bias:
            ld = ld.clone()
            ld[:, self.labels.index("other")] -= bias * temp
        right, typed, loud, ood, _ = dev_figures(self.dev, self.dev_owner, (ld / temp).softmax(-1),
                                                 self.labels)
        acc_t = float((lt.argmax(-1) == self.y_test).float().mean())
        acc_c = float((lc.argmax(-1) == self.y_calib).float().mean())
        return (f"{name}: held-out {acc_t:.3f} calibration {acc_c:.3f} T {temp:.2f} | dev "
                f"{right}/{typed} other>=0.5 {loud}/{ood}")


def encoder() -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    return (AutoTokenizer.from_pretrained(B.encoder_path(), local_files_only=True),
            AutoModel.from_pretrained(B.encoder_path(), local_files_only=True).eval())


def cached(cache: Path, texts: list[str], what: str, make: Any) -> Any:
    import torch

    key = hashlib.sha256(("\0".join(texts) + "|" + what).encode()).hexdigest()[:16]
    path = cache / f"round4-{what}-{key}.pt"
    if path.exists():
        return torch.load(path)
    value = make()
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(value, path)
    return value


def heads(a: argparse.Namespace) -> None:
    import torch

    s = Setup(a.win2, a.concat)
    tok, enc = encoder()
    feats = cached(a.cache, s.texts, "layer4", lambda: B.layer_features(s.texts, tok, enc)[4])
    sample_rows: list[dict[str, Any]] = []
    if a.samples:
        from docpipe_pdf.text import PdfText, read_document

        sample_rows = [{"id": n, "label": lab, "text": read_document(
            str(HERE.parent / "samples" / n), PdfText.Params())["text"]} for n, lab in SAMPLES.items()]
        sample_texts, sample_owner = read_windows(sample_rows)
        sample_feats = B.layer_features(sample_texts, tok, enc)[4]
    torch.set_num_threads(1)
    fit_x = feats[: len(s.fit)]
    seen, calib, test, dev = (feats[p] for p in s.parts)
    for scheme in a.weight:
        for power in a.power:
            for seed in a.seeds:
                head = B.train_head(seen, s.y, len(s.labels), seed, a.steps,
                                    weights(s.seen, scheme, power))
                cv = ""
                if a.cv:
                    acc, _ = B.cross_validate(fit_x, s.y[: len(s.fit)], len(s.labels), seed,
                                              weights(s.fit, scheme, power))
                    cv = f" CV {acc:.3f}"
                with torch.no_grad():
                    lc, lt, ld = head(calib), head(test), head(dev)
                for bias in a.biases:
                    print(s.report(f"weight {scheme}^{power} seed {seed} steps {a.steps} bias "
                                   f"{bias}{cv}", lc, lt, ld, bias), flush=True)
                if a.samples:
                    with torch.no_grad():
                        probs = (head(sample_feats) / B.temperature(lc, s.y_calib)).softmax(-1)
                    per = dev_figures(sample_rows, sample_owner, probs, s.labels)[4]
                    print("   samples:", "; ".join(f"{i} {p} {sc}" for i, _, p, sc in per))


def token_states(texts: list[str], tok: Any, enc: Any, layer: int) -> list[Any]:
    """Per text, the token states of hidden state ``layer`` (0: embeddings), unpadded."""
    import torch

    ids = tok([B.clip(t) for t in texts], truncation=True, max_length=B.MAX_TOKENS)["input_ids"]
    enc.encoder.layer = enc.encoder.layer[: max(layer, 1)]
    out: list[Any] = [None] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
    for start in range(0, len(order), 16):
        idx = order[start:start + 16]
        x, m = pad_ids([ids[i] for i in idx])
        with torch.inference_mode():
            states = enc(input_ids=x, attention_mask=m, output_hidden_states=True).hidden_states
        for row, i in enumerate(idx):
            out[i] = states[layer][row, : len(ids[i])].clone()
    return out


def pad_ids(seqs: list[list[int]]) -> tuple[Any, Any]:
    import torch

    x = torch.zeros((len(seqs), max(map(len, seqs))), dtype=torch.long)
    m = torch.zeros_like(x)
    for row, s in enumerate(seqs):
        x[row, : len(s)] = torch.tensor(s)
        m[row, : len(s)] = 1
    return x, m


def top_logits(layers: Any, head: Any, states: list[Any]) -> Any:
    """The head's logits on the LayerNorm'd mean of ``layers`` run over ``states``."""
    import torch

    w = max(len(s) for s in states)
    x = torch.zeros((len(states), w, states[0].shape[-1]))
    m = torch.zeros((len(states), w))
    for row, s in enumerate(states):
        x[row, : len(s)] = s
        m[row, : len(s)] = 1
    ext = (1.0 - m[:, None, None, :]) * torch.finfo(x.dtype).min
    for layer in layers:
        out = layer(x, attention_mask=ext)
        x = out[0] if isinstance(out, tuple) else out
    pooled = (x * m[..., None]).sum(1) / m.sum(1, keepdim=True)
    return head(torch.nn.functional.layer_norm(pooled, pooled.shape[-1:]))


def batched(layers: Any, head: Any, states: list[Any], size: int = 32) -> Any:
    import torch

    order = sorted(range(len(states)), key=lambda i: len(states[i]))
    out: list[Any] = [None] * len(states)
    with torch.no_grad():
        for start in range(0, len(order), size):
            idx = order[start:start + size]
            for i, lg in zip(idx, top_logits(layers, head, [states[i] for i in idx]), strict=True):
                out[i] = lg
    return torch.stack(out)


def finetune(a: argparse.Namespace) -> None:
    import torch

    t0 = time.perf_counter()
    torch.set_num_threads(2)
    s = Setup(a.win2, False)
    tok, enc = encoder()
    depth, base = 4, 4 - a.k
    states = cached(a.cache, s.texts, f"states{base}", lambda: token_states(s.texts, tok, enc, base))
    seen, calib, test, dev = (states[p] for p in s.parts)
    layers = torch.nn.ModuleList(copy.deepcopy(encoder()[1].encoder.layer[base:depth]))
    n_labels, hidden = len(s.labels), seen[0].shape[-1]
    identity = torch.nn.Identity()
    head0 = B.train_head(batched(layers.eval(), identity, seen), s.y, n_labels, a.head_seed)
    print(s.report(f"frozen, head seed {a.head_seed}", batched(layers, head0, calib),
                   batched(layers, head0, test), batched(layers, head0, dev)), flush=True)
    torch.manual_seed(a.head_seed)
    head = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.Tanh(),
                               torch.nn.Linear(hidden, n_labels))
    opt = torch.optim.AdamW([{"params": layers.parameters(), "lr": a.lr},
                             {"params": head.parameters(), "lr": a.lr_head}], weight_decay=1e-2)
    steps = a.epochs * -(-len(seen) // a.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / max(1, steps // 10)) * max(0.0, (steps - i) / steps))
    rng = random.Random(a.head_seed)
    for epoch in range(1, a.epochs + 1):
        layers.train()
        head.train()
        order = list(range(len(seen)))
        rng.shuffle(order)
        for start in range(0, len(order), a.batch):
            idx = order[start:start + a.batch]
            loss = torch.nn.functional.cross_entropy(top_logits(layers, head, [seen[i] for i in idx]),
                                                     s.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        layers.eval()
        head.eval()
        print(s.report(f"fine-tuned {a.k} layer(s), epoch {epoch} "
                       f"({time.perf_counter() - t0:.0f} s)", batched(layers, head, calib),
                       batched(layers, head, test), batched(layers, head, dev)), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=Path("/tmp/docpipe-round4"))
    sub = ap.add_subparsers(dest="what", required=True)
    h = sub.add_parser("heads", help="heads on the frozen encoder's features")
    h.add_argument("--weight", nargs="+", default=["none", "label-real"],
                   choices=["none", "label", "label-real"])
    h.add_argument("--power", type=float, nargs="+", default=[1.0])
    h.add_argument("--seeds", type=int, nargs="+", default=[B.SEED, 1, 2])
    h.add_argument("--steps", type=int, default=150)
    h.add_argument("--biases", type=float, nargs="+", default=[0.0],
                   help="lower the dev set's other logit by this times the temperature")
    h.add_argument("--win2", action="store_true", help="train on second windows too")
    h.add_argument("--concat", action="store_true", help="train on joined written texts too")
    h.add_argument("--cv", action="store_true")
    h.add_argument("--samples", action="store_true", help="also classify samples/*.pdf")
    f = sub.add_parser("finetune", help="fine-tune the top k kept layers with a new head")
    f.add_argument("--k", type=int, default=1, choices=[1, 2, 3, 4])
    f.add_argument("--epochs", type=int, default=4)
    f.add_argument("--lr", type=float, default=5e-5)
    f.add_argument("--lr-head", type=float, default=1e-3)
    f.add_argument("--batch", type=int, default=16)
    f.add_argument("--head-seed", type=int, default=B.SEED)
    f.add_argument("--win2", action="store_true")
    a = ap.parse_args(argv)
    heads(a) if a.what == "heads" else finetune(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
