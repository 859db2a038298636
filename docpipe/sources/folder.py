"""The watched folder (kind ``watch``, ``docpipe serve --watch DIR:FLOW``): files dropped in
DIR run through FLOW, then move to ``DIR/done/`` (the run succeeded) or ``DIR/failed/`` (it
failed, beside a ``<name>.error.txt`` saying why).

A file is ready once its size and mtime (and its sidecar's, if it has one) have not changed
for ``settle`` seconds, so a file still being copied is never taken half-written. Only DIR's
top level is walked; hidden files, names ending in ``.part``, ``.tmp``, ``.crdownload`` or
``~`` and sidecars (``*.meta.json``) are skipped. The files found ready in one round are
queued as one batch, each with the key ``NAME|SIZE|MTIME_NS`` under the source
``watch:<DIR>``. That key is what makes a restart safe: a file still in DIR when a server
starts is submitted again with the same key and gets its existing job back (moved at once if
that job is finished), so a file is never run twice and never skipped. Several servers may
watch one folder on one store: they get the same jobs, and whichever sees one finished moves
its file. A run waiting for a review keeps its file in DIR until the run ends.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docpipe.service.errors import ServiceError
from docpipe.service.intake import (
    CORRELATION_FROM,
    SIDECAR,
    BadSidecar,
    correlation_for,
    resolve_flow,
    sidecar_of,
    submit_documents,
)
from docpipe.sources import Source, log
from docpipe.status import JobStatus, Status

if TYPE_CHECKING:
    from docpipe.plugins import Registry
    from docpipe.store import Store

#: name endings of files still being written by a copier or a browser
PARTIAL = (".part", ".tmp", ".crdownload", "~")
DONE, FAILED = "done", "failed"
OPTIONS = ("interval", "settle", "correlation_from", "params")
#: a follow-up of the jobs that took T seconds waits (this - 1) x T before the next
FOLLOW_UP_SHARE = 5
#: a bound no batch of jobs reaches (``store.jobs.list`` wants one)
ALL = 2**31 - 1

#: a file's state as one round sees it: (size, mtime_ns, its sidecar's (size, mtime_ns) or None)
Signature = tuple[int, int, tuple[int, int] | None]


def split_spec(spec: str) -> tuple[str, str]:
    """``DIR:FLOW`` as (DIR, FLOW), split at the last colon."""
    folder, sep, flow = spec.rpartition(":")
    if not sep or not folder or not flow:
        raise ServiceError(f"{spec!r} is not DIR:FLOW (e.g. /srv/in:idp)", field="watch")
    return folder, flow


def _seconds(options: Mapping[str, Any], name: str, default: float) -> float:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ServiceError(f"watch option {name} is a number of seconds >= 0, not {value!r}", field="watch")
    return float(value)


def wanted(name: str) -> bool:
    """Whether a top-level entry named ``name`` may be a document to run."""
    return not (name.startswith(".") or name.endswith(PARTIAL) or name.endswith(SIDECAR))


def free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/STEM.N.SUFFIX`` with the smallest N that is free (for the
    file, its sidecar and its error file alike): a move never overwrites."""
    stem, suffix = os.path.splitext(name)
    n = 0
    while True:
        candidate = folder / (name if n == 0 else f"{stem}.{n}{suffix}")
        if not any(os.path.lexists(p) for p in (candidate, sidecar_of(candidate),
                                                 candidate.with_name(candidate.name + ".error.txt"))):
            return candidate
        n += 1


class FolderSource(Source):
    """A watched folder; see the module docstring. Options: ``interval`` (seconds between
    rounds, 1), ``settle`` (seconds a file must stay unchanged, 2), ``correlation_from``
    (``none``, ``name``: the file's stem, ``sidecar``: ``<file>.meta.json``'s
    ``correlation_id``), ``params`` (the flow's params, a table)."""

    kind = "watch"

    @classmethod
    def default_name(cls, spec: str) -> str:
        return f"watch:{Path(split_spec(spec)[0]).resolve()}"

    def __init__(self, name: str, spec: str, options: dict[str, Any], *, store: Store,
                 registry: Registry) -> None:
        super().__init__(name, spec, options, store=store, registry=registry)
        folder, self.flow = split_spec(spec)
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ServiceError(f"watch {spec}: unknown option(s) {', '.join(unknown)} "
                               f"(known: {', '.join(OPTIONS)})", field="watch")
        self.folder = Path(folder).resolve()
        if not self.folder.is_dir():
            raise ServiceError(f"watch {spec}: {self.folder} is not a folder", field="watch")
        self.interval = _seconds(options, "interval", 1.0)
        self.settle = _seconds(options, "settle", 2.0)
        self.correlation_from = str(options.get("correlation_from", "none"))
        if self.correlation_from not in CORRELATION_FROM:
            raise ServiceError(f"watch {spec}: correlation_from is one of {', '.join(CORRELATION_FROM)}, "
                               f"not {self.correlation_from!r}", field="watch")
        params = options.get("params") or {}
        if not isinstance(params, dict):
            raise ServiceError(f"watch {spec}: params is a table of the flow's params", field="watch")
        self.params: dict[str, Any] = params
        #: the jobs' source: the same for every server watching this folder
        self.source = f"watch:{self.folder}"
        resolve_flow(store, self.flow, registry, params)  # an unknown or invalid flow: refused now
        self._since: dict[str, tuple[Signature, float]] = {}  # name -> (signature, unchanged since)
        self._jobs: dict[str, tuple[str, str]] = {}  # name -> its job's (id, batch id), until moved
        self._next_follow_up = -math.inf

    # --- one round -------------------------------------------------------------------

    def poll(self, now: float | None = None) -> None:
        """Queue the files that settled, then move those whose jobs ended (``now``: a
        monotonic time, for tests)."""
        now = time.monotonic() if now is None else now
        ready = self._ready(self._scan(), now)
        if ready:
            self._submit(ready)
        if self._jobs and now >= self._next_follow_up:
            started = time.monotonic()
            self._follow_up()
            # reading thousands of followed jobs takes a while: spend at most a fifth of the time on it
            self._next_follow_up = now + FOLLOW_UP_SHARE * (time.monotonic() - started)

    def _scan(self) -> dict[str, Signature]:
        """The signatures of the files in DIR that may be documents and are not followed yet
        (one listing; a file's sidecar is found in the same listing, not by another stat)."""
        with os.scandir(self.folder) as listing:
            entries = list(listing)
        sidecars = {e.name[: -len(SIDECAR)]: e for e in entries if e.name.endswith(SIDECAR)}
        found: dict[str, Signature] = {}
        for entry in entries:
            if entry.name in self._jobs or not wanted(entry.name):
                continue
            try:
                if not entry.is_file():
                    continue  # done/, failed/, any folder
                st = entry.stat()
            except OSError:
                continue  # gone since the listing
            side = sidecars.get(entry.name)
            try:
                side_st = side.stat() if side is not None else None
            except OSError:
                side_st = None
            found[entry.name] = (st.st_size, st.st_mtime_ns,
                                 (side_st.st_size, side_st.st_mtime_ns) if side_st is not None else None)
        return found

    def _ready(self, found: dict[str, Signature], now: float) -> list[tuple[str, Signature]]:
        for name in set(self._since) - set(found):
            del self._since[name]
        ready = []
        for name, sig in found.items():
            seen = self._since.get(name)
            if seen is None:
                self.counts["seen"] += 1
            if seen is None or seen[0] != sig:
                self._since[name] = seen = (sig, now)
            if now - seen[1] >= self.settle:
                ready.append((name, sig))
        return ready

    def _submit(self, ready: list[tuple[str, Signature]]) -> None:
        docs: list[tuple[str, str | None]] = []
        keys: list[str] = []
        for name, (size, mtime_ns, _) in sorted(ready):
            path = self.folder / name
            try:
                corr = correlation_for(path, self.correlation_from)
            except BadSidecar as exc:  # this document only: the others go on
                self._since.pop(name, None)
                self._move(name, FAILED, f"error kind: bad_sidecar\nmessage: {exc}\n")
                self.counts["errors"] += 1
                continue
            docs.append((str(path), corr))
            keys.append(f"{name}|{size}|{mtime_ns}")
        if not docs:
            return
        made = submit_documents(self.store, self.flow, docs, registry=self.registry, source=self.source,
                                keys=keys, params=self.params)
        for job in made.jobs:
            name = Path(job["document"]).name
            self._jobs[name] = (job["id"], job["batch_id"])
            self._since.pop(name, None)
        self.counts["submitted"] += sum(1 for j in made.jobs if j["batch_id"] == made.batch_id)

    def _follow_up(self) -> None:
        """Move the files whose jobs ended: one query per batch followed, not per file."""
        batches = {batch_id for _, batch_id in self._jobs.values()}
        jobs = {j["id"]: j for batch_id in batches
                for j in self.store.jobs.list(batch_id=batch_id, kind="document", limit=ALL)}
        for name, (job_id, _) in list(self._jobs.items()):
            job = jobs.get(job_id)
            if job is None:
                del self._jobs[name]
                continue
            if job["status"] == JobStatus.ERROR:
                self._end(name, FAILED, self._error_text(job))
            elif job["status"] != JobStatus.FINISHED:
                continue
            elif job["outcome"] == Status.SUCCEEDED:
                self._end(name, DONE, None)
            elif job["outcome"] == Status.WAITING:
                run = self.store.get_run(job["run_id"], resolve_blobs=False) if job["run_id"] else None
                status = run["status"] if run else None
                if status == Status.SUCCEEDED:
                    self._end(name, DONE, None)
                elif status == Status.FAILED:
                    self._end(name, FAILED, self._error_text(job))
            else:
                self._end(name, FAILED, self._error_text(job))

    def _error_text(self, job: dict[str, Any]) -> str:
        """What ``<name>.error.txt`` says: the error's kind, the step it failed at, its message."""
        run = self.store.get_run(job["run_id"], resolve_blobs=False) if job["run_id"] else None
        if run is not None and run["status"] == Status.FAILED:
            kind, step, message = run["error_kind"], run.get("failed_step"), run["error"]
        else:
            kind, step, message = "job_error", None, job["error"] or f"the job ended {job['outcome'] or 'in error'}"
        return (f"error kind: {kind}\nstep: {step or '-'}\nmessage: {message}\n"
                f"run: {job['run_id']}\njob: {job['id']}\n")

    def _end(self, name: str, where: str, error: str | None) -> None:
        self._move(name, where, error)
        del self._jobs[name]

    def _move(self, name: str, where: str, error: str | None) -> None:
        """Move ``name`` (and its sidecar) into ``where``, never over another file; write
        ``error`` beside it. A file already gone (another server moved it) is left be."""
        source = self.folder / name
        if not source.exists():
            return
        folder = self.folder / where
        folder.mkdir(exist_ok=True)
        target = free_name(folder, name)
        try:
            os.rename(source, target)
        except FileNotFoundError:
            return
        side = sidecar_of(source)
        if side.exists():
            os.rename(side, sidecar_of(target))
        if error is not None:
            target.with_name(target.name + ".error.txt").write_text(error, encoding="utf-8")
        self.counts["moved"] += 1
        log.info("source %s: %s -> %s/", self.name, name, where)
