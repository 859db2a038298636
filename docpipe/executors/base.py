"""The one interface between the engine and wherever blocks run.

* :class:`Executor` makes pools; :class:`~docpipe.executors.local.LocalExecutor` (thread
  and process pools on this machine, the default) and
  :class:`~docpipe.executors.ray.RayExecutor` (Ray actors) are the two there are.
* :class:`Pool` is what the engine drives: it sends a call (a batch of inputs) to an idle
  worker with ``submit`` and hears back through a :class:`~docpipe.executors.Done` on its
  event queue. A pool starts its workers when it is made, so that the engine can have
  models load early just by making the pools a flow will need.
* :class:`BlockHost` is the body of every worker, wherever it lives (a spawned process, a
  thread pool, a Ray actor, the engine's loop for ``inline`` steps): it sets the block up
  once and runs its batches, so that a setup failure, a raising ``run`` and a broken
  manifest read the same everywhere.

This module imports nothing heavy: a worker process imports it before it sets the thread
limits that the block's libraries read when they load.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any, Protocol

from docpipe.executors import Done, ErrorInfo
from docpipe.status import ErrorKind

if TYPE_CHECKING:
    from pydantic import BaseModel

    from docpipe.blocks import Block, State


class Pool(Protocol):
    """Workers that hold one set-up block (one ``params``) and take one call at a time each."""

    #: how many workers the pool has (busy or not)
    capacity: int

    def idle(self) -> int:
        """Workers ready for a call now (set up, holding none): the engine sends a call only
        when this is above 0, so a call's timeout never counts a worker's start."""
        ...

    def submit(self, call_id: int, inputs: list[dict[str, Any]]) -> None:
        """Run one call on an idle worker; its :class:`Done` (with ``call_id``) comes on the
        engine's event queue, whatever happens to it."""
        ...

    def release(self, done: Done) -> None:
        """The engine took ``done`` off its queue: the worker counts as free again."""
        ...

    def kill(self, call_id: int, reason: str) -> bool:
        """Stop ``call_id``, which ran past its timeout: its worker is killed and replaced, and
        the call's :class:`Done` fails with ``reason``. False when this pool cannot stop a
        call (a thread cannot be killed): the engine then gives up on the call itself."""
        ...

    def pids(self) -> list[int]:
        """Process ids of the workers that run in processes of their own (for inspection and
        the tests that kill one)."""
        ...

    def close(self) -> None:
        """Stop every worker (``teardown`` runs where a worker can still answer)."""
        ...


@dataclass(frozen=True)
class Recycle:
    """When a process worker is replaced although nothing went wrong: once it ran
    ``max_tasks`` tasks (inputs), or once its resident memory is past ``max_rss_mb`` MiB
    after a call. The worker sends that call's results, runs ``teardown``, exits cleanly and
    the pool starts another in its place (for libraries that leak: PyMuPDF, Tesseract)."""

    max_tasks: int | None = None
    max_rss_mb: int | None = None

    def __bool__(self) -> bool:
        return self.max_tasks is not None or self.max_rss_mb is not None

    def reason(self, tasks: int) -> str | None:
        """Why a worker that ran ``tasks`` tasks so far is due to be replaced, or ``None``."""
        if self.max_tasks is not None and tasks >= self.max_tasks:
            return f"recycled: {tasks} tasks"
        if self.max_rss_mb is not None:
            rss = rss_mb()
            if rss is not None and rss > self.max_rss_mb:
                return f"recycled: rss {rss} MiB > {self.max_rss_mb}"
        return None


def rss_mb() -> int | None:
    """This process's resident memory in MiB (``VmRSS``; ``None`` where /proc has none)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class Executor(Protocol):
    """Where ``thread`` and ``process`` blocks run: it makes the engine's pools."""

    def make_pool(self, cls: type[Block], params: BaseModel, *, workers: int, threads: int,
                  events: SimpleQueue[Any], env: Mapping[str, str] | None = None,
                  recycle: Recycle | None = None) -> Pool:
        """A started pool of ``workers`` workers for ``cls`` with ``params``. ``threads``: the
        native threads each worker may use; ``env``: variables its workers set before the
        block loads (their temporary folder, their memory limit); ``recycle``: when a process
        worker is replaced after a call that went well (an executor may ignore it: threads
        cannot be recycled, and Ray actors are not)."""
        ...


class BlockHost:
    """One block set up once where its calls run, and the calls' results checked.

    ``load`` returns the block class and its params; it runs inside the set-up, so that a
    class that cannot be imported or params that cannot be unpickled in a worker fail the
    same way as a ``setup()`` that raises: every call then gets that error (an
    :class:`ErrorInfo` whose message starts ``setup of block '<name>' failed:``), so each
    document fails with a clear message instead of a pool respawning workers forever.
    ``threads``, where given, caps torch's threads once the block has loaded it.
    """

    __slots__ = ("name", "block", "params", "writes", "error", "_run")
    _run: Callable[[list[State], Any], Any]  # the set-up block's ``run``

    def __init__(self, name: str, load: Callable[[], tuple[type[Block], Any]],
                 threads: int | None = None) -> None:
        self.name = name
        self.block: Block | None = None
        self.params: Any = None
        self.writes: frozenset[str] = frozenset()
        self.error: ErrorInfo | None = None
        try:
            cls, self.params = load()
            self.name, self.writes = cls.manifest.name, frozenset(cls.manifest.writes)
            block = cls()
            block.setup(self.params)
            torch = sys.modules.get("torch")
            if threads is not None and torch is not None:
                torch.set_num_threads(threads)
            self.block, self._run = block, block.run
        except BaseException as exc:  # noqa: BLE001 - reported per call
            info = ErrorInfo.of(exc)
            self.error = ErrorInfo(info.kind, info.type,
                                   f"setup of block '{self.name}' failed: {info.message}",
                                   info.traceback)

    def call(self, inputs: list[State]) -> tuple[list[Any] | None, ErrorInfo | None]:
        """Run one batch: ``(results, None)`` with one dict or :class:`ErrorInfo` per input,
        or ``(None, error)`` when the call as a whole failed (set-up failed, ``run`` raised
        or returned something other than one result per input)."""
        if self.error is not None:
            return None, self.error
        try:
            return check_results(self._run(inputs, self.params), len(inputs), self.writes,
                                 self.name), None
        except BaseException as exc:  # noqa: BLE001
            return None, ErrorInfo.of(exc)

    def run_one(self, inputs: State) -> dict[str, Any] | ErrorInfo:
        """Run one input (an ``inline`` step, in the engine's loop): its written keys, or why
        it failed."""
        if self.error is not None:
            return self.error
        try:
            result: dict[str, Any] | ErrorInfo = check_results(
                self._run([inputs], self.params), 1, self.writes, self.name)[0]
        except BaseException as exc:  # noqa: BLE001
            return ErrorInfo.of(exc)
        return result

    def teardown(self) -> None:
        """Let a block that was set up release what it holds."""
        if self.block is not None:
            self.block.teardown()


def check_results(results: Any, n: int, writes: frozenset[str], block: str) -> list[Any]:
    """Normalise what ``run`` returned: exceptions become :class:`ErrorInfo`; a dict whose
    keys are not exactly the declared writes becomes an error for that input."""
    if not isinstance(results, list) or len(results) != n:
        got = f"{len(results)} results" if isinstance(results, list) else type(results).__name__
        raise TypeError(f"block '{block}' returned {got} for {n} inputs; run() must return a list "
                        "with one dict (or exception) per input")
    out: list[Any] = []
    for r in results:
        if isinstance(r, dict):
            if r.keys() != writes:
                missing, extra = writes - r.keys(), r.keys() - writes
                msg = f"block '{block}' broke its manifest: "
                msg += f"missing {sorted(missing)} " if missing else ""
                msg += f"undeclared {sorted(extra)}" if extra else ""
                r = ErrorInfo(ErrorKind.BLOCK_ERROR, "ContractError", msg.strip(), "")
        elif isinstance(r, BaseException):
            r = ErrorInfo.of(r)
        elif not isinstance(r, ErrorInfo):
            r = ErrorInfo(ErrorKind.BLOCK_ERROR, "ContractError",
                          f"block '{block}' returned {type(r).__name__}, not a dict", "")
        out.append(r)
    return out
