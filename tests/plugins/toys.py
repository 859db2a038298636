"""Fixture blocks for the engine tests: CPU-heavy, batching, failing and crashing blocks.

Loaded as a plugin with ``--plugin tests/plugins/toys.py`` (or ``Registry(extra=[...])``).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

import docpipe
from docpipe import Block, Manifest
from docpipe.errors import CorruptDocument, DocumentError, TransientError


class ReadText(Block):
    """Reads a text file; an empty file is a typed per-document error (returned, not raised)."""

    manifest = Manifest(name="toy.read", version="1.0", reads={"path": str},
                        writes={"text": str, "lines": list[str]}, runtime="thread")

    def run(self, batch: list[docpipe.State], params: BaseModel) -> list[Any]:
        out: list[Any] = []
        for item in batch:
            data = Path(item["path"]).read_text(encoding="utf-8")
            if not data:
                out.append(CorruptDocument(f"{item['path']}: empty file"))
            else:
                out.append({"text": data, "lines": data.splitlines()})
        return out


class Upper(Block):
    manifest = Manifest(name="toy.upper", version="1.0", reads={"text": str},
                        writes={"upper": str})

    def run(self, batch: list[docpipe.State], params: BaseModel) -> list[Any]:
        return [{"upper": item["text"].upper()} for item in batch]


class Words(Block):
    manifest = Manifest(name="toy.words", version="1.0", reads={"text": str},
                        writes={"words": int})

    def run(self, batch: list[docpipe.State], params: BaseModel) -> list[Any]:
        return [{"words": len(item["text"].split())} for item in batch]


class Digest(Block):
    """CPU-heavy: iterated sha256. Records its worker pid and the size of each batch it got."""

    manifest = Manifest(name="toy.digest", version="1.0", reads={"text": str},
                        writes={"digest": str, "digest_pid": int, "digest_batch": int},
                        runtime="process", batch=8, batch_wait=0.05)

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        rounds: int = 20000

    def setup(self, params: BaseModel) -> None:
        self.setups = getattr(self, "setups", 0) + 1
        self.pid = os.getpid()

    def run(self, batch: list[docpipe.State], params: Any) -> list[Any]:
        out: list[Any] = []
        for item in batch:
            h = item["text"].encode()
            for _ in range(params.rounds):
                h = hashlib.sha256(h).digest()
            out.append({"digest": h.hex(), "digest_pid": self.pid, "digest_batch": len(batch)})
        return out


class LineLen(Block):
    """Mapped over lines: the length of one line."""

    manifest = Manifest(name="toy.linelen", version="1.0", reads={"line": str},
                        writes={"length": int}, runtime="process", batch=4, batch_wait=0.02)

    def run(self, batch: list[docpipe.State], params: BaseModel) -> list[Any]:
        return [{"length": len(item["line"])} for item in batch]


class Fragile(Block):
    """Raises for the whole batch when any text contains 'boom'; the engine must isolate it."""

    manifest = Manifest(name="toy.fragile", version="1.0", reads={"text": str},
                        writes={"checked": bool}, runtime="process", batch=8, batch_wait=0.05)

    def run(self, batch: list[docpipe.State], params: BaseModel) -> list[Any]:
        if any("boom" in item["text"] for item in batch):
            raise ValueError("boom found in batch")
        return [{"checked": True} for _ in batch]


class Crash(Block):
    """Kills its own worker process when the text contains 'segfault'; sleeps on 'slow'."""

    manifest = Manifest(name="toy.crash", version="1.0", reads={"text": str},
                        writes={"survived": bool}, runtime="process")

    def run(self, batch: list[docpipe.State], params: BaseModel) -> list[Any]:
        for item in batch:
            if "segfault" in item["text"]:
                os._exit(139)
            if "slow" in item["text"]:
                time.sleep(0.5)
        return [{"survived": True} for _ in batch]


class CrashBatch(Crash):
    """:class:`Crash` taking up to 8 documents a call: a crash kills the whole batch's worker."""

    manifest = Manifest(name="toy.crash_batch", version="1.0", reads={"text": str},
                        writes={"survived": bool}, runtime="process", batch=8, batch_wait=0.2)


class Sleep(Block):
    """Sleeps, then reports its worker pid: for concurrency and kill tests."""

    manifest = Manifest(name="toy.sleep", version="1.0", reads={"text": str},
                        writes={"slept": int}, runtime="process")

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        seconds: float = 0.3

    def run(self, batch: list[docpipe.State], params: Any) -> list[Any]:
        time.sleep(params.seconds * len(batch))
        return [{"slept": os.getpid()} for _ in batch]


class Flaky(Block):
    """Fails with ConnectionError the first ``fail_times`` attempts per document (counted in a
    marker file next to the document, so attempts in different workers count together)."""

    manifest = Manifest(name="toy.flaky", version="1.0", reads={"path": str},
                        writes={"attempts": int}, runtime="process")

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        fail_times: int = 2
        #: fail with docpipe's TransientError (marked retryable) instead of ConnectionError
        transient: bool = False

    def run(self, batch: list[docpipe.State], params: Any) -> list[Any]:
        out: list[Any] = []
        for item in batch:
            marker = Path(item["path"] + ".attempts")
            n = int(marker.read_text()) + 1 if marker.exists() else 1
            marker.write_text(str(n))
            if n <= params.fail_times:
                error = TransientError if params.transient else ConnectionError
                out.append(error(f"service unavailable (attempt {n})"))
            else:
                out.append({"attempts": n})
        return out


class FileHead(Block):
    """Waits ``seconds``, then reads the first bytes of the file at ``path``: a later step that
    needs an earlier step's file (an artifact) still to be there."""

    manifest = Manifest(name="toy.file_head", version="1.0", reads={"path": str},
                        writes={"file_head": str}, runtime="process")

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        seconds: float = 0.0
        #: fail (as a typed document error) while this file does not exist
        until: str | None = None

    def run(self, batch: list[docpipe.State], params: Any) -> list[Any]:
        time.sleep(params.seconds)
        out: list[Any] = []
        for item in batch:
            if params.until is not None and not os.path.exists(params.until):
                out.append(DocumentError(f"waiting for {params.until}"))
                continue
            with open(item["path"], "rb") as f:
                out.append({"file_head": f.read(8).decode("latin-1")})
        return out


class LeaveTemp(Block):
    """Leaves a file in the temporary folder, as Tesseract or torch do when they are killed."""

    manifest = Manifest(name="toy.leave_temp", version="1.0", reads={"text": str},
                        writes={"temp_file": str}, runtime="process")

    def run(self, batch: list[docpipe.State], params: BaseModel) -> list[Any]:
        import tempfile

        out: list[Any] = []
        for _ in batch:
            fd, path = tempfile.mkstemp(prefix="left-behind-")
            os.close(fd)
            out.append({"temp_file": path})
        return out


class Hog(Block):
    """Allocates ``megabytes`` on a text containing 'hog' (a runaway library, a bomb)."""

    manifest = Manifest(name="toy.hog", version="1.0", reads={"text": str},
                        writes={"fed": bool}, runtime="process")

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        megabytes: int = 2048

    def run(self, batch: list[docpipe.State], params: Any) -> list[Any]:
        out: list[Any] = []
        for item in batch:
            if "hog" in item["text"]:
                out.append({"fed": len(bytearray(params.megabytes * 2**20)) > 0})
            else:
                out.append({"fed": False})
        return out


class Hang(Block):
    """Hangs forever on a text containing 'hang' (a stuck native library, say)."""

    manifest = Manifest(name="toy.hang", version="1.0", reads={"text": str},
                        writes={"done": bool}, runtime="process")

    def run(self, batch: list[docpipe.State], params: BaseModel) -> list[Any]:
        if any("hang" in item["text"] for item in batch):
            time.sleep(3600)
        return [{"done": True} for _ in batch]


def _explode() -> None:
    raise RuntimeError("cannot be rebuilt here")


class Booby:
    """Pickles fine in the worker; unpickling it (in the parent) raises."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_explode, ())


class Unreceivable(Block):
    manifest = Manifest(name="toy.unreceivable", version="1.0", reads={"text": str},
                        writes={"thing": Any}, runtime="process")

    def run(self, batch: list[docpipe.State], params: BaseModel) -> list[Any]:
        return [{"thing": Booby() if "trap" in item["text"] else 1} for item in batch]


class BrokenSetup(Block):
    manifest = Manifest(name="toy.broken_setup", version="1.0", reads={"text": str},
                        writes={"never": str}, runtime="process")

    def setup(self, params: BaseModel) -> None:
        raise FileNotFoundError("model directory /nonexistent/model not found")

    def run(self, batch: list[docpipe.State], params: BaseModel) -> list[Any]:
        return [{"never": "x"} for _ in batch]


class Liar(Block):
    """Breaks its manifest: writes a key it did not declare."""

    manifest = Manifest(name="toy.liar", version="1.0", reads={"text": str}, writes={"truth": str})

    def run(self, batch: list[docpipe.State], params: BaseModel) -> list[Any]:
        return [{"lie": "x"} for _ in batch]


@docpipe.hookimpl
def register_blocks(register: Any) -> None:
    for cls in (ReadText, Upper, Words, Digest, LineLen, Fragile, Crash, Sleep, Flaky, Hang, Unreceivable, BrokenSetup,
                Liar, FileHead, CrashBatch, LeaveTemp, Hog):
        register(cls)


class NeedsGpu(Block):
    """A block that asks for a GPU (for executors that place workers by device)."""

    manifest = Manifest(name="toy.needs_gpu", version="1.0", reads={"text": str},
                        writes={"on_gpu": bool}, runtime="process", device="cuda")

    def run(self, batch: list[docpipe.State], params: BaseModel) -> list[Any]:
        return [{"on_gpu": True} for _ in batch]


@docpipe.hookimpl(specname="register_blocks")
def register_more_blocks(register: Any) -> None:
    register(NeedsGpu)
