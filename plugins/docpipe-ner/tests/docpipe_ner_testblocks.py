"""Fixture plugin for the docpipe-ner tests: a block that turns a text file into ``page_texts``.

Pages are separated by form feeds (``\\f``), the way ``pdftotext`` writes them. Passed to
``docpipe.testing.run_flow`` with ``plugins=[docpipe_ner_testblocks]``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

import docpipe
from docpipe.blocks import Block, Manifest, Result, State


class TextPages(Block):
    """``path`` (a UTF-8 text file) -> ``page_texts``, one entry per form-feed-separated page."""

    manifest = Manifest(name="nertest.pages", version="1.0", reads={"path": str},
                        writes={"page_texts": list[str]}, runtime="inline")

    def run(self, batch: list[State], params: BaseModel) -> list[Result]:
        return [{"page_texts": Path(s["path"]).read_text(encoding="utf-8").split("\f")} for s in batch]


class GivenLanguage(Block):
    """``language``: the ``language`` param, for flows that test hf.ner without text.language."""

    manifest = Manifest(name="nertest.language", version="1.0", writes={"language": str}, runtime="inline")

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        language: str = "en"

    def run(self, batch: list[State], params: Params) -> list[Result]:
        return [{"language": params.language} for _ in batch]


@docpipe.hookimpl
def register_blocks(register: Callable[[type[Block]], None]) -> None:
    register(TextPages)
    register(GivenLanguage)
