"""What may be a document: regular files only.

A named pipe (FIFO) given as an input would block the first block that opens it
forever; a device may never end; a socket or a folder cannot be read as a file.
The engine refuses such inputs before any block sees them (a typed
``unsupported`` failure of that document, at the pseudo-step ``input``), and a
folder walk skips them with a warning.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from docpipe.errors import DocpipeError

#: the step name a document refused before its first step is recorded under
INPUT_STEP = "input"


class InputError(DocpipeError):
    """An input spec names nothing (no such file, a glob without matches)."""

    exit_code = 2


def expand_inputs(specs: Iterable[str], warn: Callable[[str, str], None]) -> list[str]:
    """The documents ``specs`` name, in order, each once: files; folders (every file inside,
    recursively, hidden ones skipped; entries that are not regular files are passed to
    ``warn(path, why)`` and skipped); globs. A file given by name is taken as it is (a FIFO
    or a looping link then gets its own failed row). Raises :class:`InputError`."""
    found: list[str] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if any(part.startswith(".") for part in f.relative_to(p).parts):
                    continue
                if f.is_file():
                    found.append(str(f))
                elif not f.is_dir():  # a FIFO, socket, device, dangling or looping link
                    warn(str(f), not_a_regular_file(str(f)) or "it cannot be read (a broken link?)")
        elif p.exists() or p.is_symlink():  # a looping or dangling link: its row says so
            found.append(str(p))
        elif glob.has_magic(spec):
            matches = sorted(m for m in glob.glob(spec, recursive=True) if Path(m).is_file())
            if not matches:
                raise InputError(f"no file matches {spec!r}")
            found += matches
        else:
            raise InputError(f"{spec} does not exist")
    return list(dict.fromkeys(found))


def absolute(path: str) -> str:
    """``path`` made absolute, symbolic links resolved where they can be (a looping link is
    kept as it is: its document fails with a clear error, the batch goes on)."""
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError):
        return os.path.abspath(path)


def not_a_regular_file(path: str) -> str | None:
    """Why ``path`` is not a regular file (following symlinks), or ``None`` when it is one or
    cannot be looked at (a missing file: the first block that opens it says so)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        what = "a folder"
    elif stat.S_ISFIFO(mode):
        what = "a named pipe (FIFO)"
    elif stat.S_ISSOCK(mode):
        what = "a socket"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        what = "a device"
    else:
        what = "not a file"
    return f"not a regular file: it is {what}, which docpipe does not read"


# --- names that are not valid UTF-8 -----------------------------------------------------
# File names are bytes on Linux; Python hands an undecodable byte to us as a lone surrogate
# (``surrogateescape``), which a database text column cannot hold. A document is recorded by
# its *display* name (the undecodable bytes as ``\xff``), and its exact bytes travel beside it
# (``raw_name``), so a resume opens the very file it was given.


def display_path(path: str) -> str:
    """``path`` as text any database, terminal and CSV file takes: undecodable bytes of a
    file name shown as ``\\xff`` escapes; a valid name unchanged."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def raw_name(path: str) -> str | None:
    """The exact bytes of a name :func:`display_path` changes (base64), else ``None``."""
    if display_path(path) == path:
        return None
    import base64

    return base64.b64encode(os.fsencode(path)).decode("ascii")


def from_raw_name(raw: str) -> str:
    """The path :func:`raw_name` recorded, as Python names it (``surrogateescape``)."""
    import base64

    return os.fsdecode(base64.b64decode(raw))


def clean_text(text: str) -> str:
    """``text`` (an error message, a traceback) that may quote such a name, storable."""
    return text if text.isascii() else display_path(text)
