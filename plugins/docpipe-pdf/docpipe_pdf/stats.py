"""``text.stats``: word and character counts of the document text."""

from __future__ import annotations

from pydantic import BaseModel

from docpipe.blocks import Block, Manifest, Result, State
from docpipe.errors import BlockFailed


class TextStats(Block):
    """Word and character counts of ``text``.

    Words are runs of non-whitespace; characters are all of them, whitespace included.
    """

    manifest = Manifest(
        name="text.stats",
        version="1.0",
        reads={"text": str},
        writes={"word_count": int, "char_count": int},
        runtime="inline",
        description="word_count: whitespace-separated words; char_count: all characters",
    )

    def run(self, batch: list[State], params: BaseModel) -> list[Result]:
        return [text_stats(state["text"]) for state in batch]


def text_stats(text: object) -> Result:
    if not isinstance(text, str):
        return BlockFailed(f"'text' must be a string, got {type(text).__name__}")
    return {"word_count": len(text.split()), "char_count": len(text)}
