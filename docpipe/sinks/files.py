"""File sinks: one line per finished run appended to a CSV or JSONL file, each run once.

Columns (CSV) and keys (JSONL): :data:`FILE_COLUMNS`, then the run's outputs flattened the
way result files have them (:mod:`docpipe.outputs`: lists and dicts as JSON in CSV cells,
missing values empty). A CSV file's header is written once, when the file is new: the base
columns, then the ``columns`` option, else the output keys of the first run written; a later
run's keys outside the header are left out of the CSV (JSONL has them all).

Exactly once per run in the file: a delivery is at least once (a server may crash after the
line was written and before the outbox marked it delivered), so the sink keeps the set of run
ids the file holds, read when it first opens the file, and skips a record whose run id is
already there. Writers hold an exclusive ``flock`` on the file while they read what others
appended since and write their lines, so several sinks (several servers on one host) may
share a file. A line left torn by a crash mid-write is cut off when the file is next read;
its run was not marked delivered and is written again whole. A file moved away (log
rotation) is noticed and a new one started.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import os
from pathlib import Path
from typing import IO, Any

from docpipe.outputs import _cell
from docpipe.sinks.base import Sink, SinkError

log = logging.getLogger(__name__)

#: the leading columns of a sink file: ``run_id`` first, then what result files have
FILE_COLUMNS = ["run_id", "flow", "batch_id", "document", "correlation_id", "status", "error_kind", "error",
                "failed_step", "finished_at"]


class FileSink(Sink):
    """The common part of :class:`CsvSink` and :class:`JsonlSink`: open, index, append."""

    def __init__(self, name: str, spec: str, options: dict[str, Any]) -> None:
        """Check the path (a file, in a folder that exists or can be made) and, if the file
        exists, that it is a sink file of this kind; open nothing."""
        super().__init__(name, spec, options)
        if not spec:
            raise SinkError(f"sink '{name}': {self.kind} needs a file path, e.g. {name}={self.kind}:"
                            f"/srv/out/results.{self.kind}")
        self.path = Path(spec).expanduser()
        if self.path.is_dir():
            raise SinkError(f"sink '{name}': {self.path} is a folder; give a file path")
        self.fsync: bool = self._option("fsync", True, bool)
        self._fh: IO[bytes] | None = None
        self._size = 0  # bytes of the file read into the index so far
        self._written: set[str] = set()
        self._header: list[str] | None = None
        if self.path.is_file():
            with self.path.open("rb") as fh:
                first = fh.readline()
            if first and not self._is_ours(first):
                raise SinkError(f"sink '{name}': {self.path} exists and is not a docpipe {self.kind} sink file "
                                f"(its first line has no leading run_id); give a new file path")

    def deliver(self, records: list[dict[str, Any]]) -> list[str | None]:
        """Append the records whose run ids the file does not hold yet, in one write."""
        fh = self._open()
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            self._catch_up(fh)
            new: dict[str, dict[str, Any]] = {}
            for record in records:
                if str(record["run_id"]) not in self._written:
                    new.setdefault(str(record["run_id"]), record)
            if new:
                fresh = list(new.values())
                data = b"".join([self._start(fresh) if self._size == 0 else b"", *map(self._line, fresh)])
                fh.write(data)
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
                self._size += len(data)
                self._written.update(new)
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return [None] * len(records)

    def close(self) -> None:
        """Close the file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    # --- the file ------------------------------------------------------------------------

    def _open(self) -> IO[bytes]:
        """The open file; opened anew (index and all) when it was moved or deleted."""
        if self._fh is not None:
            try:
                st, own = os.stat(self.path), os.fstat(self._fh.fileno())
                if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino):
                    return self._fh
            except FileNotFoundError:
                pass
            log.info("sink %s: %s was moved or deleted; starting a new file", self.name, self.path)
            self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+b")  # kept open between deliveries
        self._size, self._written, self._header = 0, set(), None
        return self._fh

    def _catch_up(self, fh: IO[bytes]) -> None:
        """Index what was appended since the last read (by this sink before a restart, or by
        another process), cutting off a torn last line."""
        end = os.fstat(fh.fileno()).st_size
        if end < self._size:  # truncated under us: read it again from the start
            self._size, self._written, self._header = 0, set(), None
        if end == self._size:
            return
        fh.seek(self._size)
        data = fh.read(end - self._size)
        whole = data.rfind(b"\n") + 1
        if whole < len(data):
            log.warning("sink %s: cutting a torn last line (%d bytes) off %s", self.name, len(data) - whole,
                        self.path)
            fh.truncate(self._size + whole)
            data = data[:whole]
        self._index(data.decode("utf-8", errors="replace"))
        self._size += len(data)

    # --- per format ------------------------------------------------------------------------

    def _is_ours(self, first_line: bytes) -> bool:
        raise NotImplementedError

    def _index(self, text: str) -> None:
        """Add the run ids of ``text`` (whole lines read from the file) to the index."""
        raise NotImplementedError

    def _start(self, records: list[dict[str, Any]]) -> bytes:
        """What a new file starts with (a CSV header)."""
        return b""

    def _line(self, record: dict[str, Any]) -> bytes:
        raise NotImplementedError


class CsvSink(FileSink):
    """``NAME=csv:PATH``: one CSV row per run (options: ``columns``, the output keys to
    write, default the first run's; ``fsync``, default true)."""

    kind = "csv"

    def __init__(self, name: str, spec: str, options: dict[str, Any]) -> None:
        super().__init__(name, spec, options)
        columns = self._option("columns", None, list)
        self._columns: list[str] | None = None if columns is None else [str(c) for c in columns]

    def _is_ours(self, first_line: bytes) -> bool:
        return first_line.startswith(b"run_id,")

    def _index(self, text: str) -> None:
        rows = csv.reader(io.StringIO(text, newline=""))
        if self._header is None:
            self._header = next(rows, None)
        self._written.update(row[0] for row in rows if row)

    def _start(self, records: list[dict[str, Any]]) -> bytes:
        outputs = self._columns if self._columns is not None else list(records[0].get("outputs") or {})
        self._header = FILE_COLUMNS + [c for c in outputs if c not in FILE_COLUMNS]
        return self._csv(self._header)

    def _line(self, record: dict[str, Any]) -> bytes:
        assert self._header is not None, "deliver() starts a new file with its header"
        outputs = record.get("outputs") or {}
        return self._csv([_cell(record.get(c) if c in FILE_COLUMNS else outputs.get(c)) for c in self._header])

    @staticmethod
    def _csv(cells: list[Any]) -> bytes:
        buf = io.StringIO(newline="")
        csv.writer(buf).writerow(cells)
        return buf.getvalue().encode("utf-8", errors="backslashreplace")


class JsonlSink(FileSink):
    """``NAME=jsonl:PATH``: one JSON object per line and run (option ``fsync``, default true)."""

    kind = "jsonl"

    def _is_ours(self, first_line: bytes) -> bool:
        return first_line.startswith(b'{"run_id":')

    def _index(self, text: str) -> None:
        for line in text.splitlines():
            try:
                self._written.add(str(json.loads(line)["run_id"]))
            except (ValueError, KeyError, TypeError):
                log.warning("sink %s: %s holds a line that is not a sink record: %.80s", self.name, self.path, line)

    def _line(self, record: dict[str, Any]) -> bytes:
        row = {c: record.get(c) for c in FILE_COLUMNS}
        row.update((k, v) for k, v in (record.get("outputs") or {}).items() if k not in FILE_COLUMNS)
        return (json.dumps(row, ensure_ascii=False, default=str) + "\n").encode("utf-8", errors="backslashreplace")
