"""Batches: start one over documents, resume or retry a recorded one, on an engine the
caller holds (the server's job thread) or on one made for it (:func:`run_batch`, the CLI)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from docpipe.service.errors import Conflict, NotFound, ServiceError
from docpipe.service.plans import plan_batch
from docpipe.status import Status

if TYPE_CHECKING:  # the engine and the store load late: `docpipe --help` needs neither
    from docpipe.engine import BatchResult, DocResult, Engine
    from docpipe.executors.ray import RayExecutor
    from docpipe.planner import Plan
    from docpipe.plugins import Registry
    from docpipe.store import Store

#: the results files a batch can write, by suffix
RESULT_SUFFIXES = (".csv", ".jsonl")


def _fast_start() -> bool:
    """``DOCPIPE_FAST_START=0``: each pool starts when its first input arrives, with
    ``workers`` workers whatever the batch (as before 0.2; for measuring, or flows that
    skip most steps)."""
    return os.environ.get("DOCPIPE_FAST_START", "1") != "0"


@dataclass(frozen=True)
class RunOptions:
    """How a batch runs: the options of ``docpipe run``, ``resume`` and ``runs retry``."""

    #: the results file (.csv or .jsonl) written from the records when the batch ends
    out: str | None = None
    #: workers per process/thread pool (``None``: one per core)
    workers: int | None = None
    #: documents in flight at once
    max_in_flight: int = 256
    #: the cores busy calls may hold at once (``None``: every core; see :mod:`docpipe.budget`)
    cores: int | None = None
    #: the GPUs blocks may use, by index (``None``: those the machine shows; ``()``: none)
    gpus: tuple[int, ...] | None = None
    #: where thread/process blocks run: local pools, or Ray actors
    executor: Literal["local", "ray"] = "local"
    #: the Ray cluster to join (``None``: start a local Ray)
    ray_address: str | None = None
    #: Ray actors per block: one number for every block, or by block name
    ray_actors: int | Mapping[str, int] | None = None
    #: CPUs each Ray actor reserves (``None``: its block's threads, as the cluster allows)
    ray_cpus: float | None = None
    #: pools start with the batch, sized to it (see :func:`_fast_start`)
    fast_start: bool = field(default_factory=_fast_start)


def make_executor(options: RunOptions) -> RayExecutor | None:
    """The executor ``options`` ask for: ``None`` for the local pools."""
    if options.executor != "ray":
        return None
    from docpipe.executors.ray import RayExecutor

    return RayExecutor(options.ray_address, actors=options.ray_actors, num_cpus=options.ray_cpus)


@dataclass(frozen=True)
class Batch:
    """One batch to run: a new one over ``documents``, or the recorded batch ``batch_id``
    to resume (with ``retry_failed``: its failed documents again, all or those in ``only``)."""

    plan: Plan
    #: a new batch's documents: paths, or (path, correlation id) pairs
    documents: Sequence[str | tuple[str, str | None]] = ()
    batch_id: str | None = None
    retry_failed: bool = False
    only: frozenset[str] | None = None
    correlation_id: str | None = None
    #: the command line recorded with a new batch (secret-looking values masked)
    argv: Sequence[str] | None = None

    def size(self, store: Store) -> int:
        """How many documents the batch has (a resumed batch: every input, finished or not)."""
        return len(self.documents) if self.batch_id is None else len(store.batch_inputs(self.batch_id))

    def run(self, engine: Engine) -> BatchResult:
        """Run it on ``engine``; failed documents are results, not exceptions."""
        if self.batch_id is not None:
            return engine.resume(self.plan, self.batch_id, retry_failed=self.retry_failed, documents=self.only)
        return engine.run(self.plan, self.documents, argv=list(self.argv) if self.argv else None,
                          correlation_id=self.correlation_id)


def continue_batch(store: Store, batch_id: str, registry: Registry, params: Mapping[str, Any] | None = None,
                   *, retry_failed: bool = False, only: Collection[str] | None = None) -> Batch:
    """Batch ``batch_id`` to resume (its interrupted and never started documents) or, with
    ``retry_failed``, to retry (its failed documents too, or only those in ``only``), with
    the plan it started with (see :func:`~docpipe.service.plans.plan_batch`)."""
    plan = plan_batch(store, batch_id, registry, params)
    return Batch(plan, batch_id=batch_id, retry_failed=retry_failed,
                 only=frozenset(only) if only is not None else None)


def failed_run(store: Store, run_id: str, batch_id: str | None = None) -> dict[str, Any]:
    """Run ``run_id`` (its record, without blob values), which must have failed (and belong
    to batch ``batch_id`` when one is given) to be retried alone."""
    run = store.get_run(run_id, resolve_blobs=False)
    if run is None:
        raise NotFound(f"no run {run_id}", field="run_id")
    if batch_id is not None and run["batch_id"] != batch_id:
        raise Conflict(f"{run_id} is not a run of batch {batch_id}", field="run_id")
    if run["status"] != Status.FAILED:
        raise Conflict(f"run {run_id} is {run['status']}, not failed", field="run_id")
    return run


def check_out(out: str) -> None:
    """Refuse a results file that cannot be written (a wrong suffix, a folder that is a
    file, no permission) before the first document, not after the last."""
    if Path(out).suffix.lower() not in RESULT_SUFFIXES:
        raise ServiceError("use a .csv or .jsonl file name", field="out")
    folder = Path(out).resolve().parent
    if any(p.exists() and not p.is_dir() for p in (folder, *folder.parents)):
        raise ServiceError(f"cannot write {out}: a part of its folder is a file", field="out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".docpipe-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
        if Path(out).is_dir():
            raise IsADirectoryError(21, "it is a folder")
    except OSError as exc:
        raise ServiceError(f"cannot write {out}: {exc.strerror or exc}", field="out") from None


@dataclass
class Outcome:
    """What :func:`run_batch` did."""

    result: BatchResult
    #: each document's recorded row (``Store.batch_outputs``), what the results file holds
    rows: list[dict[str, Any]]
    #: the results file written (``None``: none was asked for, or it could not be written)
    out: str | None = None
    #: why the results file could not be written (the records are safe: a resume writes it)
    out_error: str | None = None


def run_batch(store: Store, batch: Batch, options: RunOptions,
              on_document: Callable[[DocResult], None] | None = None) -> Outcome:
    """Run ``batch`` on an engine made for it (and the executor ``options`` ask for), then
    write the results file from the records. ``on_document`` hears of each document as it
    ends. The caller keeps ``store`` (and closes it)."""
    from docpipe.engine import Engine
    from docpipe.outputs import write_results

    if options.out:
        check_out(options.out)
    executor = make_executor(options)
    with executor or nullcontext(), Engine(
            store, workers=options.workers, max_in_flight=options.max_in_flight, on_document=on_document,
            cores=options.cores, gpus=options.gpus,
            executor=executor, one_batch=options.fast_start, prestart=options.fast_start) as engine:
        result = batch.run(engine)
    rows = store.batch_outputs(result.batch_id) if result.batch_id else []  # what was recorded
    outcome = Outcome(result, rows, out=options.out)
    if options.out and result.batch_id is not None:
        try:
            write_results(options.out, rows, batch.plan.outputs)
        except OSError as exc:  # the folder changed during the run: the records are safe
            outcome.out, outcome.out_error = None, exc.strerror or str(exc)
    return outcome
