"""Fixture blocks for the budget tests (``Registry(extra=[BLOCKS])``), loaded as a plugin file
so that process workers import them by path the way they import any plugin's blocks.

Each says when its call ran (``time.time()`` at its start and end: one clock for every
process on the machine) and what its worker was told: thread limits, pinned GPU."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

import docpipe
from docpipe import Block, Manifest

BLOCKS = str(Path(__file__).resolve())

#: the environment variables a worker reports (its share of the engine's budget)
REPORTED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_THREAD_LIMIT", "OPENBLAS_NUM_THREADS",
            "CUDA_VISIBLE_DEVICES")
_CALL = {"started": float, "ended": float, "pid": int, "env": dict}


def _burn(seconds: float) -> None:
    """Keep one core busy for ``seconds`` (pure Python arithmetic, no sleeping)."""
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        for i in range(2000):
            x += i * i


def _report(started: float) -> dict[str, Any]:
    return {"started": started, "ended": time.time(), "pid": os.getpid(),
            "env": {k: os.environ[k] for k in REPORTED if k in os.environ}}


class BurnA(Block):
    """A process block that burns one core for ``seconds`` per input."""

    manifest = Manifest(name="budget.burn_a", version="1.0", reads={"text": str}, writes=_CALL,
                        runtime="process")

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        seconds: float = 0.3
        #: a file each call appends "started ended" to (calls whose results are dropped too)
        log: str = ""

    def run(self, batch: list[docpipe.State], params: Any) -> list[Any]:
        started = time.time()
        _burn(params.seconds * len(batch))
        reports = [_report(started) for _ in batch]
        if params.log:
            with open(params.log, "a", encoding="utf-8") as f:
                f.write(f"{started} {reports[0]['ended']}\n")
        return reports


class BurnB(BurnA):
    """The same work as another block: its own pool."""

    manifest = Manifest(name="budget.burn_b", version="1.0", reads={"text": str}, writes=_CALL,
                        runtime="process")


class BurnThread(BurnA):
    """The same work in a thread of the engine's process."""

    manifest = Manifest(name="budget.burn_thread", version="1.0", reads={"text": str},
                        writes=_CALL, runtime="thread")


class Torch(Block):
    """Loads torch in ``setup`` (as a model block does) and says how many threads it got."""

    manifest = Manifest(name="budget.torch", version="1.0", reads={"text": str},
                        writes={"torch_threads": int, "env": dict}, runtime="process", threads=2)

    def setup(self, params: BaseModel) -> None:
        import torch  # noqa: F401 - the engine caps its threads once setup has loaded it

    def run(self, batch: list[docpipe.State], params: BaseModel) -> list[Any]:
        import torch

        env = {k: os.environ[k] for k in REPORTED if k in os.environ}
        return [{"torch_threads": torch.get_num_threads(), "env": env} for _ in batch]


def _where(manifest: Manifest) -> type[Block]:
    class Where(Block):
        def run(self, batch: list[docpipe.State], params: BaseModel) -> list[Any]:
            started = time.time()
            time.sleep(0.2)  # long enough for a second input to find this worker busy
            return [_report(started) for _ in batch]

    Where.manifest = manifest
    Where.__name__ = Where.__qualname__ = manifest.name.split(".")[1].title().replace("_", "")
    return Where


OnCuda = _where(Manifest(name="budget.on_cuda", version="1.0", reads={"text": str}, writes=_CALL,
                         runtime="process", device="cuda"))
OnAuto = _where(Manifest(name="budget.on_auto", version="1.0", reads={"text": str}, writes=_CALL,
                         runtime="process", device="auto"))
OnCpu = _where(Manifest(name="budget.on_cpu", version="1.0", reads={"text": str}, writes=_CALL,
                        runtime="process", device="cpu"))
#: a cheap step: half the cores' workers
Cheap = _where(Manifest(name="budget.cheap", version="1.0", reads={"text": str}, writes=_CALL,
                        runtime="thread", cost=0.5))
#: a step whose calls use two threads each
Wide = _where(Manifest(name="budget.wide", version="1.0", reads={"text": str}, writes=_CALL,
                       runtime="thread", threads=2))


@docpipe.hookimpl
def register_blocks(register: Any) -> None:
    for cls in (BurnA, BurnB, BurnThread, Torch, OnCuda, OnAuto, OnCpu, Cheap, Wide):
        register(cls)
