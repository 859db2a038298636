"""What ``docpipe models list`` shows: the models docpipe can find on this machine.

Plugins say which models their blocks use through the ``register_models`` hook (a
folder the project builds, a model that ships inside a pip package, ...). Any other
folder can be described with :func:`describe_folder`: a transformers folder saved with
``save_pretrained`` (``config.json``) or a spaCy pipeline (``meta.json``). Nothing is
loaded: the task comes from the folder's config, the size from its files.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

#: suffixes of transformers architecture names and the task they mean
_TASKS = (
    ("ForSequenceClassification", "classification"),
    ("ForTokenClassification", "NER (token classification)"),
    ("MTModel", "translation"),
    ("ForConditionalGeneration", "seq2seq (translation)"),
    ("ForSeq2SeqLM", "seq2seq (translation)"),
    ("ForQuestionAnswering", "question answering"),
    ("ForMaskedLM", "masked LM"),
)


@dataclass(frozen=True)
class ModelInfo:
    """One model docpipe can find. ``path`` is None when the model is expected but absent
    (``note`` then says how to get it)."""

    name: str
    task: str
    path: Path | None
    source: str
    used_by: tuple[str, ...] = ()
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def available(self) -> bool:
        return self.path is not None and self.path.exists()

    @property
    def size(self) -> int | None:
        """Bytes on disk (every file under the folder), or None when absent."""
        if not self.available:
            return None
        assert self.path is not None
        if self.path.is_file():
            return self.path.stat().st_size
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file() and not f.is_symlink())

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "path": str(self.path) if self.path else None,
                "available": self.available, "size": self.size, "source": self.source,
                "used_by": list(self.used_by), "note": self.note, **self.details}


def folder_task(path: Path) -> tuple[str, dict[str, Any]]:
    """The task of a model folder and a few facts about it, read from its config files."""
    config = path / "config.json"
    if config.is_file():
        cfg = json.loads(config.read_text(encoding="utf-8"))
        arch = (cfg.get("architectures") or [cfg.get("model_type", "?")])[0]
        details: dict[str, Any] = {"architecture": arch}
        labels = cfg.get("id2label")
        task = next((t for suffix, t in _TASKS if arch.endswith(suffix)), "encoder (embeddings)")
        if labels and "classification" in task:
            details["labels"] = len(labels)
            task += f", {len(labels)} labels"
        return task, details
    meta = path / "meta.json"
    if meta.is_file():
        m = json.loads(meta.read_text(encoding="utf-8"))
        pipes = m.get("pipeline", [])
        task = "spaCy pipeline" + (" with NER" if "ner" in pipes else "")
        return f"{task} ({m.get('lang', '?')})", {"spacy_version": m.get("version")}
    return "unknown (no config.json or meta.json)", {}


def trained_reviews(path: Path) -> dict[str, Any] | None:
    """The reviewed examples a model folder was trained with, from its ``metrics.json``
    (``models/build_doctype.py --with-reviews``): ``{"path", "sha256", "count", "used"}``;
    None when it was built without reviews or says nothing."""
    metrics = path / "metrics.json"
    if not metrics.is_file():
        return None
    try:
        reviews = json.loads(metrics.read_text(encoding="utf-8")).get("reviews")
    except (ValueError, AttributeError):
        return None
    if not isinstance(reviews, dict):
        return None
    return {k: reviews.get(k) for k in ("path", "sha256", "count", "used")}


def describe_folder(path: str | os.PathLike[str], *, name: str | None = None, source: str = "folder",
                    used_by: tuple[str, ...] = (), note: str = "") -> ModelInfo:
    p = Path(path).expanduser().resolve()
    task, details = folder_task(p) if p.is_dir() else ("unknown", {})
    card = p / "MODEL_CARD.md"
    if card.is_file():
        details["model_card"] = str(card)
    reviews = trained_reviews(p)
    if reviews is not None:
        details["reviews"] = reviews
    return ModelInfo(name or p.name, task, p, source, used_by, note, details)


def scan(root: str | os.PathLike[str], *, source: str = "folder",
         used_by: tuple[str, ...] = ()) -> list[ModelInfo]:
    """The model folders directly under ``root`` (and ``root`` itself if it is one)."""
    r = Path(root).expanduser()
    if not r.is_dir():
        return []
    candidates = [r, *sorted(p for p in r.iterdir() if p.is_dir())]
    return [describe_folder(p, source=source, used_by=used_by) for p in candidates
            if (p / "config.json").is_file() or (p / "meta.json").is_file()]


def package_model(module: str, *, folder: str | None = None, name: str | None = None,
                  task: str | None = None, used_by: tuple[str, ...] = ()) -> ModelInfo | None:
    """A model shipped inside an installed Python package (its folder, or ``folder`` in it);
    None when the package is not installed. The source names the distribution and version."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(next(iter(spec.submodule_search_locations)))
    path = base / folder if folder else base
    dists = md.packages_distributions().get(module, [])
    source = f"pip package {dists[0]} {md.version(dists[0])}" if dists else f"python package {module}"
    info = describe_folder(path, name=name or module, source=source, used_by=used_by)
    return info if task is None else replace(info, task=task)


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
