"""Fixture blocks for the executor tests, loaded as a plugin file (``Registry(extra=[BLOCKS])``)
so that process workers import them by path the way they import any plugin's blocks."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

import docpipe
from docpipe import Block, Manifest

BLOCKS = str(Path(__file__).resolve())


class BrokenSetupInline(Block):
    """A block whose model is missing: ``setup`` raises, wherever the block runs."""

    manifest = Manifest(name="exec.broken_setup_inline", version="1.0", reads={"text": str},
                        writes={"never": str}, runtime="inline")

    def setup(self, params: BaseModel) -> None:
        raise FileNotFoundError("model directory /nonexistent/model not found")

    def run(self, batch: list[docpipe.State], params: BaseModel) -> list[Any]:
        raise AssertionError("run() of a block whose setup failed")


class BrokenSetupThread(BrokenSetupInline):
    manifest = Manifest(name="exec.broken_setup_thread", version="1.0", reads={"text": str},
                        writes={"never": str}, runtime="thread")


class BrokenSetupProcess(BrokenSetupInline):
    manifest = Manifest(name="exec.broken_setup_process", version="1.0", reads={"text": str},
                        writes={"never": str}, runtime="process")


class WhereThread(Block):
    """Says where it ran: the process, and the temporary folder that process was given."""

    manifest = Manifest(name="exec.where_thread", version="1.0", reads={"text": str},
                        writes={"pid": int, "tmpdir": str}, runtime="thread")

    def run(self, batch: list[docpipe.State], params: BaseModel) -> list[Any]:
        return [{"pid": os.getpid(), "tmpdir": os.environ.get("TMPDIR", "")} for _ in batch]


class WhereProcess(WhereThread):
    manifest = Manifest(name="exec.where_process", version="1.0", reads={"text": str},
                        writes={"pid": int, "tmpdir": str}, runtime="process")


class Nap(Block):
    """A thread block that sleeps ``seconds`` on a text containing 'nap' (a slow service)."""

    manifest = Manifest(name="exec.nap", version="1.0", reads={"text": str},
                        writes={"woke": bool}, runtime="thread")

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        seconds: float = 1.0

    def run(self, batch: list[docpipe.State], params: Any) -> list[Any]:
        if any("nap" in item["text"] for item in batch):
            time.sleep(params.seconds)
        return [{"woke": True} for _ in batch]


#: what :class:`Leak` keeps, on purpose, for as long as its worker lives
_LEAKED: list[bytearray] = []


class Leak(Block):
    """A process block that leaks ``mb`` MiB per call (touched, so resident) and, in
    ``teardown``, writes a file named after its pid into ``marker_dir``."""

    manifest = Manifest(name="exec.leak", version="1.0", reads={"text": str},
                        writes={"pid": int}, runtime="process")

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        mb: int = 20
        marker_dir: str = ""

    def setup(self, params: Any) -> None:
        self.marker_dir = params.marker_dir

    def run(self, batch: list[docpipe.State], params: Any) -> list[Any]:
        _LEAKED.append(bytearray(b"\x01") * (params.mb * 2**20 * len(batch)))
        return [{"pid": os.getpid()} for _ in batch]

    def teardown(self) -> None:
        if self.marker_dir:
            Path(self.marker_dir, str(os.getpid())).write_text(str(len(_LEAKED)))


@docpipe.hookimpl
def register_blocks(register: Any) -> None:
    for cls in (BrokenSetupInline, BrokenSetupThread, BrokenSetupProcess, WhereThread,
                WhereProcess, Nap, Leak):
        register(cls)
