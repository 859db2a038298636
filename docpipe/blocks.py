"""Blocks: the unit of work docpipe runs over documents.

The contract, in one place:

* A block is a subclass of :class:`Block` with a class attribute ``manifest``
  (:class:`Manifest`): its name, version, the document-state keys it *reads* and
  *writes* (with their types), its runtime (``inline``, ``thread``, ``process``),
  its device (``cpu``, ``cuda``, ``auto``) and its batch size.
* Its parameters are a pydantic model, the nested class ``Params``. The flow's
  step params are validated against it before any document is touched, and its
  JSON Schema is what ``docpipe blocks --json`` publishes. A param that names a
  folder or file that must exist (a model folder) is typed :data:`ExistingDir` or
  :data:`ExistingFile`: a missing one fails ``docpipe validate``, not every document.
* ``__init__`` takes no arguments and is cheap. ``setup(params)`` runs once per
  worker (load a model there); a worker keeps what ``setup`` loaded for every
  later batch.
* ``run(batch, params)`` gets a list of input states (one dict per document or
  per mapped item, holding exactly the keys the block reads) and returns a list
  of the same length, in the same order: for each input either a dict holding
  exactly the keys the block writes, or an exception instance (ideally a
  :class:`docpipe.errors.DocumentError`) that fails that one document while the
  rest of the batch goes on. Raising fails the whole call; the engine then
  retries the batch's documents one by one so only the bad one fails.
* A block with a model may say which one: the classmethod ``identity(params)`` (cheap,
  called in the engine's process) returns e.g. the model folder's path and hash; task
  records carry it, and unchanged work is reused by it (docs/provenance.md).
* Blocks never call the engine, the store or each other. ``run`` is stateless
  with respect to other documents: other instances of the block run at the same
  time in other workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, WithJsonSchema

from docpipe.errors import BlockFailed

Runtime = Literal["inline", "thread", "process"]
Device = Literal["cpu", "cuda", "auto"]
RUNTIMES: tuple[str, ...] = typing.get_args(Runtime)
DEVICES: tuple[str, ...] = typing.get_args(Device)

class Artifact(str):
    """The type to declare, in ``Manifest.writes``, a key that holds the path of a file the
    block made for later steps (a decrypted copy, page images). The block writes the file
    into the run's folder, which it gets by reading the ``work_dir`` key; the file lives as
    long as the document's run (see :mod:`docpipe.artifacts`). A resumed or retried run
    whose artifact file is gone runs the step that made it again instead of restoring its
    path. Reads of ``str`` accept an ``Artifact``."""


def existing_path(value: str, kind: Literal["dir", "file"]) -> str:
    """``value`` if it names an existing folder (``kind`` ``"dir"``) or file, else a
    :class:`ValueError` saying what is wrong (the planner reports it against the step)."""
    p = Path(value).expanduser()
    what = "folder" if kind == "dir" else "file"
    if not p.exists():
        raise ValueError(f"{what} {value} does not exist" + (
            f" (relative to {os.getcwd()})" if not p.is_absolute() else ""))
    if kind == "dir" and not p.is_dir():
        raise ValueError(f"{value} is not a folder")
    if kind == "file" and p.is_dir():
        raise ValueError(f"{value} is a folder, not a file")
    return value


#: The type of a param naming a folder that must exist, e.g. a model folder: checked when
#: the flow is planned (``docpipe validate``, before any document runs). Use
#: ``ExistingDir | None = None`` where unset means a default.
ExistingDir = Annotated[
    str, AfterValidator(lambda v: existing_path(v, "dir")),
    WithJsonSchema({"type": "string", "format": "path", "x-docpipe-path": "existing_dir"})]
#: The type of a param naming a file that must exist (see :data:`ExistingDir`).
ExistingFile = Annotated[
    str, AfterValidator(lambda v: existing_path(v, "file")),
    WithJsonSchema({"type": "string", "format": "path", "x-docpipe-path": "existing_file"})]


#: A document's state as a block sees it: the keys it reads, by its own names.
State = dict[str, Any]
#: What ``run`` returns per input: the written keys, or the error for that input.
Result = dict[str, Any] | BaseException


class NoParams(BaseModel):
    """Params model of a block that takes none; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Retry:
    """When and how a failed task is tried again. Every attempt is recorded.

    ``on`` names error kinds (``worker_died``, ``timeout``, ``block_error``, ``corrupt``…),
    exception type names (``ConnectionError``), or ``retryable``: every failure that says
    trying again could help (a dead worker, a timeout, a :class:`DocumentError` whose class
    sets ``retryable = True`` such as :class:`docpipe.errors.TransientError`); a failure
    matching none of them is final. The delay before attempt ``n + 1`` is ``delay`` (fixed) or ``delay * 2**(n-1)``
    (exponential), capped at ``max_delay``, then spread by +/- ``jitter`` (a fraction) so
    that retries of many documents do not arrive in lockstep.
    """

    max_attempts: int = 1
    backoff: Literal["fixed", "exponential"] = "exponential"
    delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.2
    on: tuple[str, ...] = ("retryable",)

    def allows(self, attempt: int, kind: str, type_name: str, retryable: bool = False) -> bool:
        """Whether a failure of ``attempt`` (1-based) with this kind/type is tried again."""
        return attempt < self.max_attempts and (
            kind in self.on or type_name in self.on or (retryable and "retryable" in self.on))

    def delay_for(self, attempt: int) -> float:
        base = self.delay if self.backoff == "fixed" else self.delay * 2 ** (attempt - 1)
        base = min(base, self.max_delay)
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))

    def merged(self, override: Mapping[str, Any] | None) -> Retry:
        """This policy with a flow step's ``retry`` fields on top."""
        if not override:
            return self
        fields = dict(override)
        if "on" in fields:
            fields["on"] = tuple(fields["on"])
        return dataclasses.replace(self, **fields)


@dataclass(frozen=True)
class Manifest:
    """What a block is and what it touches; the planner derives the flow graph from it."""

    name: str
    version: str
    reads: Mapping[str, Any] = field(default_factory=dict)
    writes: Mapping[str, Any] = field(default_factory=dict)
    runtime: Runtime = "inline"
    device: Device = "cpu"
    #: how many inputs one ``run`` call takes at most (cross-document batching when > 1)
    batch: int = 1
    #: how long the engine may hold a partial batch waiting for more ready inputs (seconds)
    batch_wait: float = 0.01
    description: str = ""
    #: default retry policy of the block's tasks; flow steps override it with ``retry``
    retry: Retry = Retry()
    #: default time limit per input in seconds (thread and process blocks); steps override it
    timeout: float | None = None
    #: a ``process`` block's worker is replaced (after a clean exit: ``teardown`` runs) once it
    #: ran this many tasks, for a library that leaks memory; steps override it (``None``: never)
    max_tasks_per_worker: int | None = None
    #: ... or once its resident memory is past this many MiB after a call (``None``: never)
    max_worker_rss_mb: int | None = None
    #: how much of the machine the block's pool may fill (0 < cost <= 1): it gets
    #: ``round(cores * cost / threads)`` workers, at least one (see :mod:`docpipe.budget`);
    #: a cheap step (decrypt) takes less so a costly one (OCR, a model) keeps the cores
    cost: float = 1.0
    #: native threads one call uses (OpenMP, BLAS, torch): each worker gets that many and
    #: its busy calls hold that many of the engine's cores (1 for Tesseract: its own
    #: threading is ~6x slower on small machines)
    threads: int = 1

    def problems(self) -> list[str]:
        """Everything wrong with this manifest, empty when it is valid."""
        out = []
        if not self.name or not isinstance(self.name, str):
            out.append("manifest.name must be a non-empty string")
        if not isinstance(self.version, str) or not self.version:
            out.append("manifest.version must be a non-empty string")
        if self.runtime not in RUNTIMES:
            out.append(f"manifest.runtime {self.runtime!r} is not one of {RUNTIMES}")
        if self.device not in DEVICES:
            out.append(f"manifest.device {self.device!r} is not one of {DEVICES}")
        if not isinstance(self.batch, int) or self.batch < 1:
            out.append(f"manifest.batch must be an integer >= 1, got {self.batch!r}")
        for what in ("max_tasks_per_worker", "max_worker_rss_mb"):
            limit = getattr(self, what)
            if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                                      or limit < 1):
                out.append(f"manifest.{what} must be None or an integer >= 1, got {limit!r}")
        if (not isinstance(self.cost, int | float) or isinstance(self.cost, bool)
                or not 0 < self.cost <= 1):
            out.append(f"manifest.cost must be a number above 0 and at most 1, got {self.cost!r}")
        if not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 1:
            out.append(f"manifest.threads must be an integer >= 1, got {self.threads!r}")
        for what in ("reads", "writes"):
            keys = getattr(self, what)
            if not isinstance(keys, Mapping) or not all(isinstance(k, str) and k for k in keys):
                out.append(f"manifest.{what} must map key names to types")
        if not self.writes:
            out.append("manifest.writes is empty: a block must write at least one key")
        return out


class Block:
    """Base class of every block. See the module docstring for the contract."""

    manifest: ClassVar[Manifest]
    Params: ClassVar[type[BaseModel]] = NoParams

    def setup(self, params: Any) -> None:  # noqa: B027 - optional hook
        """Run once per worker before the first batch: load models, open resources.
        ``params`` is an instance of the block's ``Params`` (typed ``Any`` here, as in
        ``run``, so that a block can annotate its own ``Params`` class)."""

    def run(self, batch: list[State], params: Any) -> list[Result]:
        raise NotImplementedError(f"{type(self).__name__}.run")

    def teardown(self) -> None:  # noqa: B027 - optional hook
        """Run once when the worker (or the engine, for inline and thread blocks) shuts down
        cleanly: remove temporary files, release devices. Not called when a worker is killed."""

    @classmethod
    def identity(cls, params: Any) -> dict[str, Any] | None:
        """The model this block runs with ``params``, for task records' provenance and the
        reuse of unchanged work (:mod:`docpipe.provenance`): e.g. a model folder's path and
        a hash of its files (``docpipe.provenance.folder_identity``), a package's version.
        Called once per step in the engine's process, never in a worker: keep it cheap
        (nothing loaded, no file read whole). ``None`` (the default): no model."""
        return None

    @classmethod
    def ref(cls) -> str:
        """Import path of the class (``module:qualname``), used to rebuild it in a worker."""
        return f"{cls.__module__}:{cls.__qualname__}"

    @classmethod
    def params_schema(cls) -> dict[str, Any]:
        return cls.Params.model_json_schema()


def params_key(params: BaseModel) -> str:
    """An identity for a params instance, secrets included (``model_dump_json`` masks
    ``SecretStr`` values, so two passwords would look alike): blocks with equal keys share
    a pool. A digest, so the key itself reveals nothing."""
    import hashlib
    import pickle

    return hashlib.sha256(pickle.dumps(params.model_dump(mode="python"))).hexdigest()


def type_name(tp: Any) -> str:
    """A short, stable name for a declared state type (``str``, ``list[dict]``, ``Any``)."""
    if tp is Any or tp is object:
        return "Any"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    if isinstance(tp, str):
        return tp
    return repr(tp).replace("typing.", "")


def types_compatible(written: Any, read: Any) -> bool:
    """Whether a value declared as ``written`` may feed a read declared as ``read``."""
    w, r = (type_name(t).replace("Artifact", "str") for t in (written, read))
    if "Any" in (w, r) or w == r:
        return True
    # optional reads take the plain type: 'str | None' accepts 'str'
    return r.replace(" | None", "") == w.replace(" | None", "")


def import_ref(ref: str) -> type[Block]:
    """Load a block class from its :meth:`Block.ref` (in a worker process)."""
    import importlib

    module, _, qualname = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return typing.cast(type[Block], obj)


@contextlib.contextmanager
def library_path(path: str) -> Iterator[str]:
    """A name a C library (MuPDF, qpdf, Tesseract) can open for the file at ``path``.

    A file name that is not valid UTF-8 (names are bytes on Linux; Python hands them over
    with lone surrogates) cannot reach such a library as text. For those the file is opened
    here and the library is given ``/proc/self/fd/N``, which opens the same file; use the
    name inside the ``with`` block (the library keeps its own handle after that)::

        with library_path(state["path"]) as name:
            doc = pymupdf.open(name)
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        fd = os.open(path, os.O_RDONLY)
        try:
            folder = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
            yield f"{folder}/{fd}"
        finally:
            os.close(fd)
        return
    yield path


def page_list(value: object) -> list[str] | BlockFailed:
    """``page_texts`` (what ``ocr.merge`` and ``pdf.text`` write, blocks read) as a list of
    strings, or the document's failure saying why it is not one. ``None`` pages (an upstream
    step had nothing for a page) read as empty pages; anything else that is not a string
    makes the whole input invalid."""
    if not isinstance(value, list | tuple):
        return BlockFailed(f"'page_texts' must be a list of strings, got {type(value).__name__}")
    pages: list[str] = []
    for number, page in enumerate(value, start=1):
        if page is None:
            pages.append("")
        elif isinstance(page, str):
            pages.append(page)
        else:
            return BlockFailed(f"'page_texts' page {number} must be a string, got {type(page).__name__}")
    return pages
