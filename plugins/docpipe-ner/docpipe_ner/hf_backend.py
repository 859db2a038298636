"""The transformers backend of ``hf.ner``: a local token-classification model folder.

Sub-word predictions become entity spans here, from the fast tokenizer's offsets,
rather than through ``pipeline("token-classification", aggregation_strategy=...)``:

* **one forward pass per sorted sub-batch.** All chunks of all documents in the
  engine's batch are tokenized at once, ordered by length and padded per sub-batch of
  ``batch_size`` windows, so short pages are not padded to the longest one. The pipeline
  runs pre- and post-processing one text at a time and does not sort.
* **whole words.** A word's label is the label of its first sub-token (the ``"first"``
  strategy); ``"simple"`` groups sub-tokens, so a model that tags ``##son`` differently
  from ``John`` yields half-words, whose offsets no longer match word boundaries.
* **texts longer than the model.** A chunk with more tokens than the model takes is
  split by the tokenizer into overlapping windows (``return_overflowing_tokens`` with a
  stride of 1/8 of the window) and their entities are merged like chunks are; nothing
  is truncated away.
* precision and device stay under our control (``bf16``; ``int8`` dynamic quantization
  of the Linear layers on CPU), without the pipeline moving tensors behind our back.

An entity's score is the mean, over its words, of the probability of the label the
word got (from its first sub-token). Labels are the model's ``id2label`` with their BIO
prefixes decoded (``B-PER``, ``I-PER``, ... or BIOES), then mapped by
:mod:`docpipe_ner.labels`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from docpipe.errors import MissingDependency
from docpipe_ner.chunks import Found, merge
from docpipe_ner.labels import decode_tags, parse_tag

#: model types whose position ids start after the padding index (two positions unusable)
_OFFSET_POSITIONS = ("roberta", "camembert", "longformer")


def resolve_device(device: str, torch: Any) -> str:
    """``"auto"`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; check ``"cuda"``."""
    has_cuda = bool(torch.cuda.is_available())
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device == "cuda" and not has_cuda:
        raise MissingDependency("hf.ner: device 'cuda' was asked for but torch sees no CUDA device; "
                                "install the CUDA build of torch or use device 'auto' or 'cpu'")
    return device


class TransformersBackend:
    """A token-classification model and its fast tokenizer, loaded once per worker."""

    def __init__(self, model: str, precision: str = "fp32", device: str = "auto",
                 batch_size: int = 32) -> None:
        path = Path(model).expanduser()
        if not (path / "config.json").is_file():
            raise MissingDependency(
                f"hf.ner: there is no transformers model folder at '{model}' (backend "
                "'transformers', param 'model': a local folder with config.json, the weights and "
                "the tokenizer files, as written by model.save_pretrained(folder) and "
                "tokenizer.save_pretrained(folder); nothing is downloaded)")
        try:
            import torch
            from transformers import AutoModelForTokenClassification, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError as exc:
            raise MissingDependency(f"hf.ner's transformers backend needs torch and transformers "
                                    f"({exc}): pip install 'docpipe-ner[torch]'") from exc
        self.torch = torch
        self.device = resolve_device(device, torch)
        if precision == "int8" and self.device != "cpu":
            raise ValueError("hf.ner: precision 'int8' (dynamic quantization) runs on CPU only; "
                             "use 'bf16' on CUDA or set device 'cpu'")
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bars from every worker
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            net = AutoModelForTokenClassification.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise MissingDependency(f"hf.ner: '{model}' is not a token-classification model folder "
                                    f"that transformers can load: {exc}") from exc
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        if not getattr(self.tokenizer, "is_fast", False):
            raise MissingDependency(f"hf.ner: the tokenizer in '{model}' is not a fast tokenizer; "
                                    "character offsets need one (save tokenizer.json with it)")
        net.eval()
        if precision == "bf16":
            net = net.to(dtype=torch.bfloat16)
        elif precision == "int8":
            with warnings.catch_warnings():  # torch.ao.quantization warns it is deprecated
                warnings.simplefilter("ignore")
                net = torch.ao.quantization.quantize_dynamic(net, {torch.nn.Linear}, dtype=torch.qint8)
        self.model = net.to(self.device)
        config = net.config
        self.tags = [parse_tag(str(config.id2label[i])) for i in range(config.num_labels)]
        self.max_tokens = max_tokens(self.tokenizer.model_max_length, config)
        self.stride = max(1, self.max_tokens // 8)
        self.batch_size = batch_size
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.name = str(path)

    def predict(self, texts: list[str]) -> list[list[Found]]:
        """The entities of each text, with the model's entity types and scores."""
        if not texts:
            return []
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_tokens, stride=self.stride,
                             return_overflowing_tokens=True, return_offsets_mapping=True)
        ids: list[list[int]] = enc["input_ids"]
        owner: list[int] = enc["overflow_to_sample_mapping"]
        probs = self._forward(ids)
        windows: list[list[tuple[int, int, list[Found]]]] = [[] for _ in texts]
        for w, p in enumerate(probs):
            offsets = enc["offset_mapping"][w]
            words = enc.word_ids(w)
            real = [offsets[t] for t, word in enumerate(words) if word is not None]
            span = (real[0][0], real[-1][1]) if real else (0, 0)
            windows[owner[w]].append((*span, self._entities(p, words, offsets)))
        out: list[list[Found]] = []
        for text, pieces in zip(texts, windows, strict=True):
            if len(pieces) > 1:  # the text had more tokens than the model takes
                last = len(pieces) - 1
                pieces = [(0 if i == 0 else s, len(text) if i == last else e, f)
                          for i, (s, e, f) in enumerate(pieces)]
            out.append(merge(pieces, len(text)))
        return out

    def _forward(self, ids: list[list[int]]) -> list[Any]:
        """Per window, a (tokens x labels) array of probabilities; windows are batched by
        length so each sub-batch is padded only to its own longest window."""
        torch = self.torch
        order = sorted(range(len(ids)), key=lambda w: len(ids[w]))
        probs: list[Any] = [None] * len(ids)
        for b in range(0, len(order), self.batch_size):
            group = order[b:b + self.batch_size]
            width = max(len(ids[w]) for w in group)
            input_ids = torch.full((len(group), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for row, w in enumerate(group):
                input_ids[row, :len(ids[w])] = torch.tensor(ids[w], dtype=torch.long)
                mask[row, :len(ids[w])] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids.to(self.device),
                                    attention_mask=mask.to(self.device)).logits
            batch = logits.float().softmax(-1).cpu().numpy()
            for row, w in enumerate(group):
                probs[w] = batch[row, :len(ids[w])]
        return probs

    def _entities(self, probs: Any, words: list[int | None], offsets: list[tuple[int, int]]
                  ) -> list[Found]:
        """Entity spans of one window: words labelled by their first sub-token, BIO-decoded."""
        spans: list[list[Any]] = []  # per word: [start, end, label id, score]
        previous: int | None = None
        for t, word in enumerate(words):
            if word is None:
                previous = None
                continue
            if word == previous:
                spans[-1][1] = offsets[t][1]
                continue
            label = int(probs[t].argmax())
            spans.append([offsets[t][0], offsets[t][1], label, float(probs[t][label])])
            previous = word
        found = []
        for first, last, typ in decode_tags([self.tags[s[2]] for s in spans]):
            score = sum(s[3] for s in spans[first:last + 1]) / (last - first + 1)
            found.append(Found(spans[first][0], spans[last][1], typ, score))
        return found


def max_tokens(tokenizer_limit: int | None, config: Any) -> int:
    """How many tokens (special tokens included) one window of the model may hold."""
    positions = getattr(config, "max_position_embeddings", None) or 512
    if any(kind in str(getattr(config, "model_type", "")) for kind in _OFFSET_POSITIONS):
        positions -= 2
    if tokenizer_limit and 0 < tokenizer_limit < 100_000:
        return min(tokenizer_limit, positions)
    return positions
