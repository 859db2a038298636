"""What may be a document: regular files only.

A named pipe (FIFO) given as an input would block the first block that opens it
forever; a device may never end; a socket or a folder cannot be read as a file.
The engine refuses such inputs before any block sees them (a typed
``unsupported`` failure of that document, at the pseudo-step ``input``), and a
folder walk skips them with a warning.
"""

from __future__ import annotations

import os
import stat

#: the step name a document refused before its first step is recorded under
INPUT_STEP = "input"


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
