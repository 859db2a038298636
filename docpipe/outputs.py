"""Result files (CSV, JSONL): one row per document, written atomically.

Columns: ``document``, ``status``, ``error_kind``, ``error``, ``failed_step`` (the
step a failed document failed at), then the flow's output keys in the order the
flow declares them. Lists and dicts are written
as JSON in CSV cells; missing values are empty. The file is written to a
temporary file in the same folder and renamed over the target, so an
interrupted run never leaves a half-written result file. The file gets the mode
of the file it replaces, else the one the umask gives a new file (0644 with
umask 022), not the temporary file's 0600: a colleague or a downstream service
account can read it.
"""

from __future__ import annotations

import csv
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

BASE_COLUMNS = ["document", "status", "error_kind", "error", "failed_step"]
FORMATS = (".csv", ".jsonl")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (other threads may see it briefly)
    os.umask(mask)
    return mask


def _mode_for(target: Path) -> int:
    """The mode the result file gets: the replaced file's, else 0666 less the umask."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def write_results(path: str | Path, rows: Iterable[Mapping[str, Any]], outputs: list[str]) -> Path:
    """Write ``rows`` (each with the base columns and an ``outputs`` mapping) to ``path``."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot write {target}: use a .csv or .jsonl file name")
    target.parent.mkdir(parents=True, exist_ok=True)
    columns = BASE_COLUMNS + [c for c in outputs if c not in BASE_COLUMNS]
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, _mode_for(target))  # mkstemp makes it 0600
        # a value quoting a file name that is not UTF-8 is written with \xff escapes
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace", newline="") as fh:
            if suffix == ".csv":
                writer = csv.writer(fh)
                writer.writerow(columns)
                for row in rows:
                    out = row.get("outputs") or {}
                    writer.writerow([_cell(row.get(c)) for c in BASE_COLUMNS]
                                    + [_cell(out.get(c)) for c in columns[len(BASE_COLUMNS):]])
            else:
                for row in rows:
                    out = row.get("outputs") or {}
                    record = {c: row.get(c) for c in BASE_COLUMNS}
                    record.update({c: out.get(c) for c in columns[len(BASE_COLUMNS):]})
                    fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
