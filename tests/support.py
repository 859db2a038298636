"""Helpers the tests share: paths, the real `docpipe` command, worker killers, flow files.

Imported by name (``from support import ROOT, run_cli``) rather than from ``conftest``: several
test folders (this one, the plugins' own) each have a ``conftest.py``, and which one
``import conftest`` finds depends on the order pytest-xdist collected them in. Fixtures stay
in ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOYS = str(ROOT / "tests" / "plugins" / "toys.py")
DOCPIPE = str(Path(sys.executable).parent / "docpipe")


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real `docpipe` command."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([DOCPIPE, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@contextmanager
def kill_one_worker(pool: Any, after: float = 0.4) -> Iterator[list[int]]:
    """SIGKILL one of ``pool``'s workers (a process or a Ray actor) ``after`` seconds into the
    ``with`` body, i.e. inside the calls it started; yields the list its pid is put in."""
    victims: list[int] = []

    def kill() -> None:
        time.sleep(after)
        victims.append(pool.pids()[0])
        os.kill(victims[0], signal.SIGKILL)

    killer = threading.Thread(target=kill)
    killer.start()
    try:
        yield victims
    finally:
        killer.join()


@contextmanager
def kill_decrypt_workers_when(engine: Any, work: Path, copies: int) -> Iterator[list[int]]:
    """SIGKILL every worker (or Ray actor) of ``engine``'s pdf.decrypt pool once ``copies``
    decrypted copies exist in the work area ``work`` and every decrypt call was answered
    (no worker holds one), during the ``with`` body; yields the list the pids are put in."""
    killed: list[int] = []

    def ready() -> bool:
        pools = engine.pools("pdf.decrypt")
        return (len(list(work.glob("*/*.pdf"))) >= copies and bool(pools)
                and pools[0].idle() == pools[0].capacity)

    def kill() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not ready():
            time.sleep(0.02)
        killed.extend(engine.pools("pdf.decrypt")[0].pids())
        for pid in killed:
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill)
    killer.start()
    try:
        yield killed
    finally:
        killer.join()


def write_flow(path: Path, steps: list[dict[str, Any]], **flow: Any) -> Path:
    path.write_text(json.dumps({"name": "t", "version": "1", "steps": steps, **flow}))
    return path


#: the token the servers tests start accept
SERVE_TOKEN = "test-token-0123456789"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_server(proc: subprocess.Popen[Any], url: str, output: Any, seconds: float = 90) -> None:
    """Until ``url`` answers 200; an AssertionError with ``output()`` (the server's log) if the
    process ends or ``seconds`` pass first."""
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"docpipe serve did not start:\n{output()}")
        time.sleep(0.2)


@contextmanager
def served(url: str, folder: Path, name: str, *args: str,
           env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real ``docpipe serve`` on a free loopback port over store ``url`` (``--plugin`` toys,
    one worker, 3 s leases, ``args`` more), its log in ``folder/NAME.log``; yields its base
    URL and process (which the test may kill); stopped at the end if it still runs."""
    port = free_port()
    log = open(folder / f"{name}.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [DOCPIPE, "serve", "--port", str(port), "--db", url, "--data-dir", str(folder / "data"),
         "--plugin", TOYS, "--workers", "1", "--lease", "3", "--log-level", "info", *args],
        env={**os.environ, "DOCPIPE_TOKEN": SERVE_TOKEN, "DOCPIPE_BLOBS": str(folder / "blobs"), **(env or {})},
        stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(proc, f"{base}/healthz", lambda: (folder / f"{name}.log").read_text())
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
