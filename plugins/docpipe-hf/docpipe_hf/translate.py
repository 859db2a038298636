"""``hf.translate``: the text of a document in the target language, from a local seq2seq
translation model (MarianMT-style).

**No translation model ships with docpipe**, and none is packaged on PyPI (the Marian,
opus-mt and NLLB wrappers there all download at run time). ``model`` is needed to translate:
a folder that ``AutoTokenizer`` and ``AutoModelForSeq2SeqLM`` load with
``from_pretrained(path)``, e.g. a ``Helsinki-NLP/opus-mt-de-en`` snapshot fetched once on a
machine with network and copied next to your flows. Without one the step still validates
(so a flow can carry it behind ``when: "params.translation_model != None"``), and its
``setup`` fails every document that reaches it with :class:`MissingDependency` saying so.

One model translates one language pair (or, for multilingual
Marian models, several sources; ``prefix`` adds the target token some need, e.g.
``">>fra<<"``), so route documents with a ``when`` on the detected language.

How: the text is split into paragraphs and sentences (:mod:`docpipe_hf.sentences`),
sentences are packed into chunks of at most ``max_tokens`` tokens, and the chunks of every
document in the engine's batch are translated together: sorted by length, ``chunk_batch``
chunks per ``generate()`` call (greedy, or beam search with ``num_beams`` > 1). Chunk
translations are joined with a space inside a paragraph and a blank line between
paragraphs.

``translated_from`` is the ``language`` the document came with. A document already in
``target_language`` (compared on the primary subtag: ``en-GB`` is ``en``) passes through
unchanged, as does an empty text; flows should still route with ``when`` so that such
documents never reach the pool.
"""

from __future__ import annotations

import warnings
from typing import Any

from pydantic import Field

from docpipe.blocks import Block, ExistingDir, Manifest, Result, State
from docpipe.errors import BlockFailed, MissingDependency
from docpipe_hf.runtime import (
    ModelParams,
    model_dir,
    pad,
    prepare,
    quiet_transformers,
    resolve_device,
    sorted_batches,
)
from docpipe_hf.sentences import chunk_text

NO_MODEL_HINT = (
    "No translation model ships with docpipe (none is packaged on PyPI): save a MarianMT-style "
    "model folder (e.g. Helsinki-NLP/opus-mt-de-en, fetched once on a machine with network) "
    "and point the block's `model` param at it.")


def primary(language: str) -> str:
    """The primary subtag of a language tag, lower-case: ``en-GB`` -> ``en``."""
    return language.strip().replace("_", "-").split("-")[0].lower()


class Translate(Block):
    """Translate a document's text into the target language with a local seq2seq model."""

    manifest = Manifest(
        name="hf.translate",
        version="1.0",
        reads={"full_text": str, "language": str},
        writes={"translation": str, "translated_from": str},
        runtime="process",
        device="auto",
        # a document is many chunks: 8 documents already make several full generate() calls
        batch=8,
        batch_wait=0.01,
        description=(
            "translation: full_text in target_language (unchanged when it already is); "
            "translated_from: the language the document came with."
        ),
    )

    class Params(ModelParams):
        model: ExistingDir | None = Field(
            default=None,
            description=("a local MarianMT-style folder; required to translate (none ships). "
                         "Unset, the step validates but fails every document that reaches it, "
                         "so a flow can carry the step behind a `when` on a flow param"))
        target_language: str = Field(default="en", min_length=2,
                                     description="documents already in it pass through")
        max_tokens: int = Field(default=400, ge=16, le=4096,
                                description="most source tokens per chunk (whole sentences)")
        num_beams: int = Field(default=1, ge=1, le=16, description="1: greedy decoding")
        max_new_tokens: int | None = Field(
            default=None, ge=1,
            description="cap on generated tokens per chunk (default 1.5 x the longest source "
                        "chunk of the generate() call + 10)")
        chunk_batch: int = Field(default=16, ge=1, description="chunks per generate() call")
        prefix: str = Field(default="", description="text put before every chunk, e.g. '>>fra<<'")

    @classmethod
    def identity(cls, params: Params) -> dict[str, Any] | None:
        """The model folder (its path and a hash of its files' names, sizes and times)."""
        from docpipe.provenance import folder_identity

        return folder_identity(params.model) if params.model is not None else None

    def setup(self, params: Params) -> None:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        quiet_transformers()
        if params.model is None:
            raise MissingDependency(f"block 'hf.translate' has no model. {NO_MODEL_HINT}")
        path = model_dir(params.model, "hf.translate", NO_MODEL_HINT)
        self.device = resolve_device(params.device, params.precision)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*sacremoses.*")  # optional normaliser
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForSeq2SeqLM.from_pretrained(path, local_files_only=True)
        self.model = prepare(model, params.precision, self.device)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        limit = getattr(model.config, "max_position_embeddings", None) or params.max_tokens
        self.max_tokens = min(params.max_tokens, limit)
        self.max_target = limit
        # room for the special tokens the tokenizer adds (Marian: </s>) and for the prefix
        reserved = len(self.tokenizer("")["input_ids"])
        if params.prefix:
            reserved += self._count([params.prefix + " "])[0]
        self.budget = max(1, self.max_tokens - reserved)

    def _count(self, texts: list[str]) -> list[int]:
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(x) for x in ids]

    def run(self, batch: list[State], params: Params) -> list[Result]:
        target = primary(params.target_language)
        results: list[Result | None] = [None] * len(batch)
        chunks: list[str] = []
        layouts: dict[int, list[int]] = {}  # document -> chunk count per paragraph
        for i, state in enumerate(batch):
            text, language = state.get("full_text"), state.get("language")
            if not isinstance(text, str) or not isinstance(language, str):
                results[i] = BlockFailed("'full_text' and 'language' must be strings, got "
                                         f"{type(text).__name__} and {type(language).__name__}")
                continue
            if primary(language) == target or not text.strip():
                results[i] = {"translation": text, "translated_from": language}
                continue
            paras = chunk_text(text, self.budget, self._count)
            layouts[i] = [len(p) for p in paras]
            chunks.extend(c for p in paras for c in p)
        translated = iter(self._generate(chunks, params)) if chunks else iter(())
        for i, counts in layouts.items():
            joined = [" ".join(next(translated) for _ in range(n)) for n in counts]
            results[i] = {"translation": "\n\n".join(joined),
                          "translated_from": batch[i]["language"]}
        return results  # type: ignore[return-value]

    def _generate(self, chunks: list[str], params: Params) -> list[str]:
        """The translation of every chunk, in order; similar lengths share a generate() call."""
        import torch

        sources = [params.prefix + " " + c if params.prefix else c for c in chunks]
        ids = self.tokenizer(sources, truncation=True, max_length=self.max_tokens,
                             return_attention_mask=False)["input_ids"]
        out: list[str] = [""] * len(chunks)
        for group in sorted_batches([len(s) for s in ids], params.chunk_batch):
            input_ids, mask = pad([ids[i] for i in group], self.pad_id, self.device)
            longest = max(len(ids[i]) for i in group)
            limit = params.max_new_tokens or min(int(longest * 1.5) + 10, self.max_target)
            with torch.inference_mode():
                generated = self.model.generate(input_ids=input_ids, attention_mask=mask,
                                                num_beams=params.num_beams, do_sample=False,
                                                max_new_tokens=limit)
            texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
            for i, text in zip(group, texts, strict=True):
                out[i] = text.strip()
        return out
