"""One budget of CPU cores and GPUs per engine, shared by every pool of every batch.

Without it each process block got ``--workers`` processes: the six process pools of
``flows/idp.json`` on a 2-core machine were twelve workers, and OCR, classification and NER
oversubscribed the cores whenever they overlapped. With it:

* **pools are sized per block**: a step's ``"workers"``, else the engine's ``workers``
  (``docpipe run --workers``), else the block's manifest hint: ``round(cores * cost /
  threads)`` workers (at least one), where ``cost`` (0 < cost <= 1) is how much of the
  machine the block's pool may fill and ``threads`` the native threads one of its calls
  uses; a GPU block gets one worker per GPU;
* **busy threads never exceed the cores**: every call holds ``threads`` core tokens from
  the moment the engine sends it until its :class:`~docpipe.executors.Done` comes back
  (whatever happened to it: a result, a failure, a kill). The engine sends a call only when
  its tokens are free, oldest waiting work first, so a pool whose step has nothing to do
  holds none and the others use its cores;
* **each worker is told its share**: ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
  ``OMP_THREAD_LIMIT`` (Tesseract) and ``torch.set_num_threads`` are the block's
  ``threads`` (see :func:`docpipe.executors.worker.thread_env`);
* **GPUs are given by index** (``--gpus 0,1``; by default the GPUs this machine shows: see
  :func:`visible_gpus`; ``--gpus none`` for none): a block whose manifest says
  ``device="cuda"`` or ``"auto"`` gets one worker per GPU, each pinned to its own with
  ``CUDA_VISIBLE_DEVICES``; every other process worker gets ``CUDA_VISIBLE_DEVICES=""`` so
  that a CPU block (or an ``auto`` one with no GPU in the budget) never takes a GPU's memory.

``DOCPIPE_BUDGET=0`` (or ``Engine(budget=False)``) restores the behaviour before the budget
(``workers`` per pool, ``cores // workers`` threads each, no tokens, devices unpinned), for
measuring. This module imports nothing heavy: the executors' workers read it too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from docpipe.blocks import Manifest

#: the variable that turns the budget off (``0``) for an engine made without ``budget=``
BUDGET_ENV = "DOCPIPE_BUDGET"
#: the variable CUDA (and torch) read: the GPUs a process may see
CUDA_ENV = "CUDA_VISIBLE_DEVICES"
#: what a process pool gets in its ``env``: the GPUs its workers are pinned to, in turn
#: (worker slot ``i`` gets ``gpus[i % len(gpus)]``: see :func:`worker_env`)
GPUS_ENV = "DOCPIPE_WORKER_GPUS"


def budget_on() -> bool:
    """Whether an engine made without ``budget=`` uses one (``DOCPIPE_BUDGET`` is not ``0``)."""
    return os.environ.get(BUDGET_ENV, "1") != "0"


def visible_gpus() -> tuple[int, ...]:
    """The GPUs a budget gets when none are named: those ``CUDA_VISIBLE_DEVICES`` lists when
    it is set (``""``: none; ids that are not indexes, like UUIDs: none, name them with
    ``--gpus``), else the NVIDIA GPUs the driver shows (``/proc/driver/nvidia/gpus``: read
    without importing torch or starting CUDA), else none."""
    listed = os.environ.get(CUDA_ENV)
    if listed is not None:
        try:
            return check_gpus(int(part) for part in listed.split(",") if part.strip())
        except ValueError:
            return ()
    try:
        return tuple(range(len(os.listdir("/proc/driver/nvidia/gpus"))))
    except OSError:
        return ()


def parse_gpus(text: str) -> tuple[int, ...]:
    """GPU indexes as ``--gpus`` takes them: ``"0,1"`` -> ``(0, 1)``; ``""`` or ``"none"``: no
    GPU. Anything else is a :class:`ValueError` that says what is wrong."""
    text = text.strip()
    if text.lower() in ("", "none"):
        return ()
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise ValueError(f"{part!r} is not a GPU index: give indexes such as 0,1 (as "
                             "nvidia-smi numbers them), or none")
        out.append(int(part))
    return check_gpus(out)


def check_gpus(gpus: Iterable[int]) -> tuple[int, ...]:
    """``gpus`` as a tuple, refused when an index is negative, not a whole number or repeated."""
    out = tuple(gpus)
    for g in out:
        if not isinstance(g, int) or isinstance(g, bool) or g < 0:
            raise ValueError(f"GPU index {g!r} is not a whole number >= 0")
    if len(set(out)) != len(out):
        raise ValueError(f"GPU indexes repeat: {','.join(map(str, out))}; give each GPU once")
    return out


class Budget:
    """The cores and GPUs of one engine, and the core tokens its busy calls hold.

    ``cores``: how many threads may be busy at once (default: ``os.cpu_count()``);
    ``gpus``: the GPU indexes blocks may use (``None``: :func:`visible_gpus`). ``limit_calls``: whether the
    engine waits for free tokens before it sends a call (``False`` where something else
    places the work, such as Ray's scheduler: pools are still sized and pinned from here).
    The engine's loop is the only caller of :meth:`take` and :meth:`give`.
    """

    __slots__ = ("cores", "gpus", "limit_calls", "free")

    def __init__(self, cores: int | None = None, gpus: Iterable[int] | None = None, *,
                 limit_calls: bool = True) -> None:
        if cores is not None and (not isinstance(cores, int) or isinstance(cores, bool) or cores < 1):
            raise ValueError(f"cores must be a whole number >= 1, got {cores!r}")
        self.cores: int = cores or os.cpu_count() or 1
        self.gpus: tuple[int, ...] = visible_gpus() if gpus is None else check_gpus(gpus)
        self.limit_calls = limit_calls
        #: core tokens no call holds now
        self.free = self.cores

    def __repr__(self) -> str:
        gpus = ",".join(map(str, self.gpus)) or "none"
        return f"Budget(cores={self.cores}, gpus={gpus}, free={self.free})"

    # --- tokens (the engine's loop) ----------------------------------------------------------
    def can_take(self, n: int) -> bool:
        """Whether a call holding ``n`` tokens may start now."""
        return not self.limit_calls or self.free >= n

    def take(self, n: int) -> None:
        """A call holding ``n`` tokens starts (the caller checked :meth:`can_take`)."""
        self.free -= n

    def give(self, n: int) -> None:
        """A call holding ``n`` tokens is over."""
        self.free = min(self.cores, self.free + n)

    @property
    def busy(self) -> int:
        """Core tokens held by calls now."""
        return self.cores - self.free

    # --- sizing ------------------------------------------------------------------------------
    def on_gpu(self, manifest: Manifest) -> bool:
        """Whether the block's workers run on the budget's GPUs (``cuda``/``auto`` and some
        GPUs given)."""
        return manifest.device in ("cuda", "auto") and bool(self.gpus)

    def threads(self, manifest: Manifest) -> int:
        """The native threads each worker of the block gets, which its calls hold as tokens."""
        return max(1, min(manifest.threads, self.cores))

    def pool_size(self, manifest: Manifest, workers: int | None = None) -> int:
        """How many workers the block's pool gets: ``workers`` (a step's or the command
        line's) when given, else one per GPU for a GPU block, else the manifest's hint."""
        if workers:
            return max(1, workers)
        if self.on_gpu(manifest):
            return len(self.gpus)
        return max(1, min(self.cores, round(self.cores * manifest.cost / self.threads(manifest))))

    def pool_env(self, manifest: Manifest) -> dict[str, str]:
        """What a process pool of the block adds to its workers' environment: the GPUs to pin
        them to, or no GPU at all (a ``cuda`` block with no GPU in the budget is left to find
        its own, as before: see :meth:`missing_gpu`)."""
        if self.on_gpu(manifest):
            return {GPUS_ENV: ",".join(map(str, self.gpus))}
        if manifest.device == "cuda":
            return {}
        return {CUDA_ENV: ""}

    def missing_gpu(self, manifest: Manifest) -> str | None:
        """Why the block cannot run on this budget's local pools, or ``None``: it needs a GPU
        (``device="cuda"``) and the budget has none."""
        if manifest.device == "cuda" and not self.gpus:
            return (f"block '{manifest.name}' needs a GPU (device='cuda') and this engine was "
                    "given none: name the GPUs it may use with --gpus 0,1 (Engine(gpus=[0, 1]))")
        return None


def worker_env(env: Mapping[str, str] | None, slot: int) -> dict[str, str] | None:
    """The environment of a pool's worker ``slot`` (0, 1, …; a replacement keeps its slot):
    the pool's ``env`` with ``CUDA_VISIBLE_DEVICES`` set to the slot's GPU when the pool has
    GPUs (:data:`GPUS_ENV`), the GPUs taken in turn."""
    if env is None:
        return None
    gpus = env.get(GPUS_ENV)
    if not gpus:
        return dict(env)
    pinned = gpus.split(",")
    return {**env, CUDA_ENV: pinned[slot % len(pinned)]}
