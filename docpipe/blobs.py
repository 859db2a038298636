"""Large payloads on disk: a content-addressed blob store, and the references rows hold.

A blob is a file named by the SHA-256 of its bytes, under ``<root>/ab/cd/<hash>``
(the first two pairs of hex digits as folders, so no folder grows huge). Writing
is atomic and idempotent: bytes go to a temporary file in the target folder,
are flushed (and fsynced unless ``fsync=False``) and renamed into place; a blob
that is already there is not written again. Two processes storing the same
bytes at once both succeed and leave one file.

The store offloads values with :func:`offload` before it encodes them as JSON
and restores them with :func:`resolve` after it decodes them, so blocks never
see the difference. A value offloaded becomes a reference::

    {"$blob": "<sha256 hex>", "size": <bytes stored>, "type": "json" | "bytes"}

``bytes`` (and ``bytearray``/``memoryview``) values anywhere in the structure
become ``bytes`` blobs (JSON cannot hold them); a top-level value whose JSON is
longer than the threshold becomes one ``json`` blob holding that JSON text. A
mapping that has exactly the three keys of a reference is read as one, so a
block should not write such a mapping itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_THRESHOLD", "BlobStore", "blob_ref", "is_blob_ref", "offload", "resolve"]

#: Values whose JSON is longer than this many bytes are offloaded (64 KiB).
DEFAULT_THRESHOLD = 64 * 1024

_HEX64 = re.compile(r"[0-9a-f]{64}")
_REF_KEYS = frozenset(("$blob", "size", "type"))
_BYTES = (bytes, bytearray, memoryview)
_encode = json.JSONEncoder(default=str).encode


class BlobStore:
    """Content-addressed files under ``root``; see the module docstring.

    Safe to use from several threads and processes at once. Folders are
    created on the first write, so opening a store costs nothing.
    """

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        """A store rooted at ``root``; ``fsync=False`` skips the flush to disk (tests)."""
        self.root = Path(root)
        self.fsync = fsync

    def __repr__(self) -> str:
        """``BlobStore('/path/to/blobs')``."""
        return f"BlobStore({str(self.root)!r})"

    def path(self, digest: str) -> Path:
        """Where the blob ``digest`` (64 lowercase hex digits) lives."""
        if not _HEX64.fullmatch(digest):
            raise ValueError(f"not a SHA-256 hex digest: {digest!r}")
        return self.root / digest[:2] / digest[2:4] / digest

    def __contains__(self, digest: object) -> bool:
        """Whether blob ``digest`` is stored."""
        return isinstance(digest, str) and bool(_HEX64.fullmatch(digest)) and self.path(digest).is_file()

    def put(self, data: bytes) -> str:
        """Store ``data`` (if not stored yet) and return its SHA-256 hex digest."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.is_file():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{digest}.{os.getpid()}.{threading.get_ident()}.{os.urandom(4).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return digest

    def get(self, digest: str) -> bytes:
        """The bytes of blob ``digest``; :class:`FileNotFoundError` naming it if missing."""
        target = self.path(digest)
        try:
            return target.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"blob {digest} is missing from {self.root} (expected {target})") from None


def blob_ref(digest: str, size: int, kind: str) -> dict[str, Any]:
    """A reference to a stored blob, as rows hold it (``kind`` is ``"json"`` or ``"bytes"``)."""
    return {"$blob": digest, "size": size, "type": kind}


def is_blob_ref(value: object) -> bool:
    """Whether ``value`` is a blob reference as :func:`blob_ref` makes them."""
    return (
        isinstance(value, dict)
        and value.keys() == _REF_KEYS
        and isinstance(value["$blob"], str)
        and value["type"] in ("json", "bytes")
    )


def offload(value: Any, blobs: BlobStore, threshold: int = DEFAULT_THRESHOLD) -> Any:
    """``value`` ready for JSON: bytes and large top-level values replaced by blob references.

    A mapping's values are its top-level values (a flow run's or a task's
    outputs); anything else is one value. Other objects JSON cannot hold are
    left for the encoder (the store's uses ``default=str``).
    """
    if isinstance(value, Mapping):
        return {key: _offload_one(item, blobs, threshold) for key, item in value.items()}
    return _offload_one(value, blobs, threshold)


def _offload_one(value: Any, blobs: BlobStore, threshold: int) -> Any:
    """One top-level value: its bytes offloaded, then the whole offloaded if too long."""
    value = _bytes_to_blobs(value, blobs)
    if isinstance(value, dict) and is_blob_ref(value):
        return value
    text = _encode(value)
    if len(text) > threshold:  # ASCII: characters are bytes
        data = text.encode("ascii")
        return blob_ref(blobs.put(data), len(data), "json")
    return value


def _bytes_to_blobs(value: Any, blobs: BlobStore) -> Any:
    """``value`` with every bytes-like object in it (at any depth) stored as a blob."""
    if isinstance(value, _BYTES):
        data = bytes(value)
        return blob_ref(blobs.put(data), len(data), "bytes")
    if isinstance(value, Mapping):
        return {key: _bytes_to_blobs(item, blobs) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_bytes_to_blobs(item, blobs) for item in value]
    return value


def resolve(value: Any, blobs: BlobStore) -> Any:
    """Decoded JSON with every blob reference (at any depth) replaced by what it refers to."""
    if isinstance(value, dict):
        if is_blob_ref(value):
            data = blobs.get(value["$blob"])
            if value["type"] == "bytes":
                return data
            return resolve(json.loads(data), blobs)
        return {key: resolve(item, blobs) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, blobs) for item in value]
    return value
