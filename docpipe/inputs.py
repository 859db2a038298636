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
