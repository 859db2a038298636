"""Artifacts: files a block makes for the later steps of the same document's run.

A decrypted copy of a PDF, rendered page images, a converted file: they belong
to the document's *run*, not to the worker process that made them. The engine
gives every run a folder of its own in one *work area* (``<work area>/<run id>``,
mode 0700) and hands it to the blocks that read the ``work_dir`` state key. A
block writes its files there and declares the keys that hold their paths as
:data:`docpipe.blocks.Artifact` in its manifest.

Lifetime, in one place:

* the folder is made when the first step that reads ``work_dir`` runs;
* it is removed when the run ends, succeeded or failed, by the engine that ran it;
* an interrupted run keeps it, so ``resume`` finds the files again: the engine that
  resumes a run *adopts* its folder; a restored step whose artifact file is gone is run
  again instead of restored (see :meth:`docpipe.engine.Engine.resume`);
* an engine killed with ``SIGKILL`` cannot remove anything: every engine holds an
  exclusive ``flock`` on ``owners/<engine id>.lock`` for its life, each run folder
  names its owner, and every engine start *sweeps* the folders whose owner no longer
  holds its lock (after adopting the runs it resumes). So decrypted content outlives a
  crashed run only until the next docpipe engine starts on the same work area.

Where the work area is: ``$DOCPIPE_WORK_DIR``, else ``work`` next to a SQLite store's
database file (``.docpipe/work``), else ``.docpipe/work`` in the current folder (a
PostgreSQL store), else a folder of the user's under the system's temporary folder (an
engine without a store). On a cluster, point it at a folder every node mounts at the
same path (as with models): a step on one node reads what a step on another wrote.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path

#: the state key under which a run's folder reaches the blocks that read it
WORK_DIR_KEY = "work_dir"
#: a run folder without an owner file is left alone this long (it is being made)
_UNOWNED_GRACE = 300.0
_OWNER = ".owner"
_OWNERS = "owners"


def default_work_root(store_url: str | None) -> Path:
    """``$DOCPIPE_WORK_DIR``; else ``work`` beside a SQLite database file or ``.docpipe/work``
    for another store; else (no store) ``docpipe-work-<uid>`` under the temporary folder."""
    given = os.environ.get("DOCPIPE_WORK_DIR")
    if given:
        return Path(given).resolve()
    if store_url is None:
        return Path(tempfile.gettempdir()) / f"docpipe-work-{os.getuid()}"
    from docpipe.store.connect import store_dir

    return store_dir(store_url) / "work"


class WorkArea:
    """The run folders of one engine in a shared work area (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], engine_id: str) -> None:
        self.root = Path(root)
        self.engine_id = engine_id
        (self.root / _OWNERS).mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(self.root, 0o700)
        # locked under a temporary name, then renamed into place: a sweep never sees the
        # lock file of a live engine unlocked
        self._lock_path = self.root / _OWNERS / f"{engine_id}.lock"
        part = self.root / _OWNERS / f".{engine_id}.part"
        self._lock_fd: int | None = os.open(part, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(part, self._lock_path)
        self._made: set[str] = set()

    def path(self, run_id: str) -> str:
        """The folder of run ``run_id`` (made by :meth:`ensure`)."""
        return str(self.root / run_id)

    def ensure(self, run_id: str) -> None:
        """Make the run's folder (owned by this engine) if this engine has not yet."""
        if run_id in self._made:
            return
        folder = self.root / run_id
        folder.mkdir(mode=0o700, exist_ok=True)
        self._own(folder)
        self._made.add(run_id)

    def adopt(self, run_ids: list[str]) -> None:
        """Take over the folders of interrupted runs this engine resumes (where they exist)."""
        for run_id in run_ids:
            folder = self.root / run_id
            if folder.is_dir():
                self._own(folder)
                self._made.add(run_id)

    def temp_dir(self) -> str:
        """This engine's folder for its workers' temporary files (``TMPDIR``): removed when the
        engine closes, swept like a run folder when it was killed."""
        name = f"tmp-{self.engine_id}"
        self.ensure(name)
        return str(self.root / name)

    def remove(self, run_id: str) -> None:
        """Remove the run's folder and everything in it (the run ended)."""
        if run_id in self._made:
            self._made.discard(run_id)
            shutil.rmtree(self.root / run_id, ignore_errors=True)

    def sweep(self) -> list[str]:
        """Remove the run folders whose owning engine is gone; return their run ids."""
        removed = []
        now = time.time()
        for entry in os.scandir(self.root):
            if entry.name == _OWNERS or entry.name in self._made or not entry.is_dir():
                continue
            owner = _read(Path(entry.path) / _OWNER)
            if owner is None:
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime < _UNOWNED_GRACE:
                        continue  # another engine is making it right now
            elif owner == self.engine_id or _alive(self.root / _OWNERS / f"{owner}.lock"):
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.name)
        for lock in (self.root / _OWNERS).glob("*.lock"):
            if lock != self._lock_path and not _alive(lock):
                lock.unlink(missing_ok=True)
        for part in (self.root / _OWNERS).glob(".*.part"):  # engines killed while starting
            with contextlib.suppress(OSError):
                if now - part.stat().st_mtime > _UNOWNED_GRACE:
                    part.unlink()
        return removed

    def close(self, *, remove_all: bool = False) -> None:
        """Remove the workers' temporary folder and release this engine's lock (its run
        folders become sweepable); ``remove_all`` removes the run folders it still holds too."""
        self.remove(f"tmp-{self.engine_id}")
        if remove_all:
            for run_id in list(self._made):
                self.remove(run_id)
        if self._lock_fd is not None:
            self._lock_path.unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _own(self, folder: Path) -> None:
        part = folder / f"{_OWNER}.{self.engine_id}"
        part.write_text(self.engine_id, encoding="ascii")
        os.replace(part, folder / _OWNER)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _alive(lock: Path) -> bool:
    """Whether an engine holds ``lock`` (a missing lock file: no)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def missing_files(value: object) -> bool:
    """Whether an artifact value (a path, or a list of paths from a ``map``) names a file
    that no longer exists. ``None`` (nothing was made) is not missing."""
    if isinstance(value, str):
        return not os.path.exists(value)
    if isinstance(value, list | tuple):
        return any(missing_files(v) for v in value)
    return False
