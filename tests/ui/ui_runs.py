"""Real run records for the UI tests: real flows over toy blocks, run by the real engine."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support import DOCPIPE, TOYS, wait_for_server

from docpipe.engine import Engine
from docpipe.planner import build_plan
from docpipe.plugins import Registry
from docpipe.store import Store

#: read the document, then three steps at once (upper, words, and a map over its lines)
FLOW: dict[str, Any] = {
    "name": "ui-demo", "version": "1", "outputs": ["upper", "words", "length"],
    "steps": [
        {"id": "read", "block": "toy.read"},
        {"id": "upper", "block": "toy.upper"},
        {"id": "words", "block": "toy.words"},
        {"id": "lengths", "map": "lines", "as": "line", "block": "toy.linelen"},
    ],
}
#: the same without the map (no worker processes: quick)
QUICK: dict[str, Any] = {**FLOW, "name": "ui-quick", "outputs": ["upper", "words"], "steps": FLOW["steps"][:3]}
SCRIPT = "<script>alert('owned')</script>"


def make_runs(tmp_path: Path, flow: dict[str, Any] = QUICK, *, missing: bool = True,
              correlation_id: str | None = "ticket-7", url: str | None = None) -> dict[str, Any]:
    """One batch: ``good.txt`` (whose text holds a ``<script>`` tag), ``lines.txt``, and, when
    ``missing``, ``late.txt`` that does not exist yet, so its run fails with a traceback until the
    file is created and the run retried. Returns the store URL, paths and run ids by file name."""
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "good.txt").write_text(f"hello {SCRIPT} world", encoding="utf-8")
    (docs / "lines.txt").write_text("one\ntwo two\nthree three three", encoding="utf-8")
    paths = [str(docs / "good.txt"), str(docs / "lines.txt")]
    if missing:
        paths.append(str(docs / "late.txt"))
    url = url or f"sqlite:///{tmp_path / 'store.db'}"
    registry = Registry(extra=[TOYS])
    plan = build_plan(json.loads(json.dumps(flow)), registry)
    with Store(url) as store, Engine(store, workers=1) as engine:
        result = engine.run(plan, paths, correlation_id=correlation_id)
    runs = {Path(r.document).name: r.run_id for r in result.results}
    return {"url": url, "docs": docs, "batch_id": result.batch_id, "runs": runs}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(made: dict[str, Any], tmp_path: Path, token: str, *args: str) -> Iterator[str]:
    """The real ``docpipe serve`` on a free loopback port over ``made``'s store (``--plugin``
    toys, one worker, ``args`` more), until the block ends; yields its base URL. Its stdout
    goes to ``tmp_path/serve.out``, its stderr (the log) to ``tmp_path/serve.log``."""
    port = free_port()
    out, err = tmp_path / "serve.out", tmp_path / "serve.log"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(
            [DOCPIPE, "serve", "--port", str(port), "--db", made["url"], "--data-dir", str(tmp_path / "data"),
             "--plugin", TOYS, "--workers", "1", *args],
            env={**os.environ, "DOCPIPE_TOKEN": token}, stdout=stdout, stderr=stderr, cwd=tmp_path)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_server(proc, f"{base}/openapi.json", lambda: out.read_text() + err.read_text(), 60)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
