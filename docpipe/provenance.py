"""Provenance: what produced a task's outputs, and the key under which an equal task reuses them.

Every succeeded task record carries a ``provenance`` (JSON text, ``task_runs.provenance``):

* ``block``, ``version`` — the block's name and ``manifest.version``;
* ``dist``, ``dist_version`` — the distribution that ships it (``None`` for a block
  registered from a file with ``--plugin``);
* ``model`` — what the block reports with :meth:`docpipe.blocks.Block.identity` (a model
  folder's path and a hash of its files' names, sizes and times; a package's version;
  Tesseract's version and language packs), ``None`` for a block without a model;
* ``params`` — sha256 of the canonical JSON of the step's effective params, secrets masked
  (pydantic's ``SecretStr`` dumps as ``**********``: a password never reaches a record,
  not even as a hash that a dictionary could reverse);
* ``inputs`` — sha256 of the inputs the task read (only where the cache policy is on, see
  below): each value as canonical JSON, except that a string naming an existing file
  counts as that file's content hash (so a moved folder, or the same decrypted copy
  made again in a new run's folder, hashes alike) and the run's own folder
  (``work_dir``) counts as one constant.

The static part (all but ``inputs``) is computed once per step of a plan, when its batch
starts, in the engine's process; an engine without a store computes nothing.

**Skipping unchanged work.** With the cache policy on (a flow's ``"cache": true``, a step's
``"cache": true``/``false``, or ``docpipe run --reuse``), a task's :func:`cache_key` is the
sha256 of its static provenance and its input hash; a task whose key equals that of a
succeeded earlier task reuses that task's recorded outputs instead of running (see
docs/provenance.md). Hashing every task's inputs is what costs (a few µs a task, more for
long texts), so it is done only where the policy is on.

File content hashes are cached by path, size and ``st_mtime_ns``: a document read by five
steps is hashed once, and again only when it changes.

Blocks report their model with the helpers here (:func:`folder_identity`,
:func:`package_identity`, :func:`file_identity`, :func:`sample_digest`); a plugin may
import this module.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from docpipe.planner import Node

__all__ = [
    "StaticProvenance",
    "cache_key",
    "canonical_json",
    "file_digest",
    "file_identity",
    "folder_identity",
    "input_hash",
    "package_identity",
    "params_hash",
    "sample_digest",
    "static_provenance",
    "with_inputs",
]

#: what a ``work_dir`` input hashes as: every run has its own folder, the work is the same
_WORK_DIR = "<work_dir>"
#: strings longer than this (or holding a line break) are text, never checked for a file
_MAX_PATH = 4096
#: bytes read at a time when hashing a file
_CHUNK = 1 << 20

#: path -> (size, mtime_ns, sha256): content hashes of files, valid while both are unchanged
_file_hashes: dict[str, tuple[int, int, str]] = {}
#: path -> (size, mtime_ns, fingerprint) of :func:`sample_digest`
_samples: dict[str, tuple[int, int, str]] = {}
#: (path, mtime_ns of the folder) -> the folder's identity
_folders: dict[tuple[str, int], dict[str, Any]] = {}


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON: keys sorted, no spaces, ASCII; bytes as their sha256,
    anything else JSON has no form for as its ``str()``."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": hashlib.sha256(value).hexdigest()}
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return str(value)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def params_hash(params: BaseModel | None) -> str | None:
    """sha256 of the canonical JSON of ``params`` (a block's validated ``Params``), secrets
    masked as pydantic dumps them; ``None`` for a step without params."""
    if params is None:
        return None
    return _sha(canonical_json(params.model_dump(mode="json")))


def file_digest(path: str | os.PathLike[str]) -> str | None:
    """The sha256 of a regular file's content, or ``None`` if ``path`` names none. Cached by
    path, size and modification time (ns): an unchanged file is read once per process."""
    name = os.fspath(path)
    try:
        st = os.stat(name)
    except (OSError, ValueError):
        return None
    if not (st.st_mode & 0o170000 == 0o100000):  # a regular file (a FIFO would block)
        return None
    cached = _file_hashes.get(name)
    if cached is not None and cached[0] == st.st_size and cached[1] == st.st_mtime_ns:
        return cached[2]
    h = hashlib.sha256()
    try:
        with open(name, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError:
        return None
    digest = h.hexdigest()
    _file_hashes[name] = (st.st_size, st.st_mtime_ns, digest)
    return digest


def sample_digest(path: str | os.PathLike[str]) -> str | None:
    """A cheap fingerprint of a big file (model weights, a language pack): sha256 of its size,
    its first and its last MiB; ``None`` if ``path`` names no regular file. Cached like
    :func:`file_digest`. Use it in :meth:`~docpipe.blocks.Block.identity`, where a whole
    hash of gigabytes would delay every batch's start."""
    name = os.fspath(path)
    try:
        st = os.stat(name)
    except (OSError, ValueError):
        return None
    if not (st.st_mode & 0o170000 == 0o100000):
        return None
    cached = _samples.get(name)
    if cached is not None and cached[0] == st.st_size and cached[1] == st.st_mtime_ns:
        return cached[2]
    h = hashlib.sha256(str(st.st_size).encode())
    try:
        with open(name, "rb") as f:
            h.update(f.read(_CHUNK))
            if st.st_size > 2 * _CHUNK:
                f.seek(-_CHUNK, os.SEEK_END)
            h.update(f.read(_CHUNK))
    except OSError:
        return None
    digest = h.hexdigest()
    _samples[name] = (st.st_size, st.st_mtime_ns, digest)
    return digest


def file_identity(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A model file's identity: its real path and content hash (``None`` if it is not a file)."""
    digest = file_digest(path)
    if digest is None:
        return None
    return {"path": os.path.realpath(path), "sha256": digest}


def folder_identity(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A model folder's identity: its real path and a sha256 of every file's relative name,
    size and modification time under it (cheap: nothing is read). Cached per path and the
    folder's own modification time; ``None`` if ``path`` is not a folder."""
    real = os.path.realpath(path)
    try:
        mtime = os.stat(real).st_mtime_ns
    except OSError:
        return None
    if not os.path.isdir(real):
        return None
    found = _folders.get((real, mtime))
    if found is not None:
        return found
    entries = []
    for root, dirs, files in os.walk(real):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            entries.append(f"{os.path.relpath(full, real)}\0{st.st_size}\0{st.st_mtime_ns}")
    identity = {"path": real, "files": len(entries),
                "hash": hashlib.sha256("\n".join(entries).encode("utf-8", "surrogateescape")).hexdigest()}
    _folders[(real, mtime)] = identity
    return identity


def package_identity(name: str) -> dict[str, Any]:
    """A model that ships as a pip package (a spaCy pipeline): its name and version
    (``None`` when it is not installed)."""
    try:
        version: str | None = md.version(name)
    except md.PackageNotFoundError:
        version = None
    return {"package": name, "version": version}


class StaticProvenance:
    """What produced a step's tasks, but for their inputs: once per step of a plan.

    ``json`` is the provenance text of a task record without an input hash; ``digest``
    the sha256 of it, the static half of every :func:`cache_key` of the step.
    """

    __slots__ = ("digest", "json", "value")

    def __init__(self, value: dict[str, Any]) -> None:
        self.value = value
        self.json = canonical_json(value)
        self.digest = _sha(self.json)


def static_provenance(node: Node) -> StaticProvenance | None:
    """The static provenance of a block or map step (``None`` for other kinds). A block whose
    :meth:`~docpipe.blocks.Block.identity` raises gets ``{"error": ...}`` as its model: the
    step still runs and records, and a later fix changes the key."""
    info = node.block
    if info is None or node.kind not in ("block", "map"):
        return None
    cls = info.cls
    try:
        model = cls.identity(node.params)
    except Exception as exc:  # noqa: BLE001 - a block's bug must not stop the batch
        model = {"error": f"{type(exc).__name__}: {exc}"}
    value = {
        "block": cls.manifest.name, "version": cls.manifest.version,
        "dist": info.dist, "dist_version": info.dist_version,
        "model": model, "params": params_hash(node.params),
    }
    renames = {k: v for k, v in node.writes.items() if k != v}
    if renames:  # outputs are recorded by state key: a step that renames them reuses only its own
        value["writes"] = renames
    return StaticProvenance(value)


def _with_files(value: Any) -> Any:
    """``value`` with every string that names an existing regular file replaced by that
    file's content hash (``{"$file": sha256}``)."""
    if isinstance(value, str):
        if 0 < len(value) <= _MAX_PATH and "\n" not in value and "\0" not in value:
            digest = file_digest(value)
            if digest is not None:
                return {"$file": digest}
        return value
    if isinstance(value, list | tuple):
        return [_with_files(v) for v in value]
    if isinstance(value, dict):
        return {k: _with_files(v) for k, v in value.items()}
    return value


def input_hash(inputs: Mapping[str, Any], work_dir_keys: frozenset[str] = frozenset()) -> str:
    """sha256 of what a task read: ``inputs`` by the block's own key names; a value naming
    an existing file counts as its content; keys in ``work_dir_keys`` (the run's folder)
    count as one constant."""
    value = {k: _WORK_DIR if k in work_dir_keys else _with_files(v) for k, v in inputs.items()}
    return _sha(canonical_json(value))


def cache_key(static: StaticProvenance, inputs_digest: str) -> str:
    """The key under which a task's outputs may be reused: sha256 of its step's static
    provenance (block, version, distribution, model, params hash) and its input hash."""
    return _sha(f"{static.digest}:{inputs_digest}")


def with_inputs(static: StaticProvenance, inputs_digest: str, **extra: Any) -> str:
    """A task's provenance text: the static part, its input hash and ``extra`` (``reused_from``)."""
    return canonical_json({**static.value, "inputs": inputs_digest, **extra})
