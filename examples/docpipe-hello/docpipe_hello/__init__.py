"""docpipe-hello: the smallest complete docpipe plugin, one block that greets a document."""

from __future__ import annotations

import os
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

import docpipe
from docpipe.blocks import Block, Manifest, Result, State


class Greet(Block):
    """Greet a document by its file name."""

    manifest = Manifest(
        name="hello.greet",
        version="1.0",
        reads={"path": str},  # the document-state keys this block needs ...
        writes={"greeting": str},  # ... and the ones it adds
        runtime="inline",  # cheap: runs in the engine, no worker process
        description="Writes a greeting naming the document's file.",
    )

    class Params(BaseModel):
        """The step's `params` in a flow, checked before any document is touched."""

        model_config = ConfigDict(extra="forbid")

        greeting: str = "hello"

    def run(self, batch: list[State], params: Params) -> list[Result]:
        # one result per input, in the same order
        return [{"greeting": f"{params.greeting}, {os.path.basename(s['path'])}"} for s in batch]


@docpipe.hookimpl
def register_blocks(register: Callable[[type[Block]], None]) -> None:
    register(Greet)
