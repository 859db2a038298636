from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from docpipe.planner import Plan, build_plan
from docpipe.plugins import Registry

ROOT = Path(__file__).resolve().parent.parent
TOYS = str(ROOT / "tests" / "plugins" / "toys.py")
# fixture plugins import as top-level modules (`toys`), the way `--plugin FILE` loads them
sys.path.insert(0, str(ROOT / "tests" / "plugins"))
DOCPIPE = str(Path(sys.executable).parent / "docpipe")


@pytest.fixture(scope="session")
def registry() -> Registry:
    """Installed plugins plus the fixture blocks of tests/plugins/toys.py."""
    return Registry(extra=[TOYS])


@pytest.fixture
def plan(registry: Registry) -> Callable[..., Plan]:
    def make(steps: list[dict[str, Any]], **flow: Any) -> Plan:
        return build_plan({"name": "t", "version": "1", "steps": steps, **flow}, registry)

    return make


@pytest.fixture
def docs(tmp_path: Path) -> Callable[..., list[str]]:
    """Write text documents: docs("a", "b b") -> [paths]."""

    def make(*texts: str) -> list[str]:
        folder = tmp_path / "docs"
        folder.mkdir(exist_ok=True)
        paths = []
        for i, text in enumerate(texts):
            p = folder / f"doc{i:04d}.txt"
            p.write_text(text, encoding="utf-8")
            paths.append(str(p))
        return paths

    return make


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


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """The URL of an empty PostgreSQL test database on a private server (see tests/pg.py).

    ``DOCPIPE_TEST_PG_URL`` names an existing database to use instead.
    """
    given = os.environ.get("DOCPIPE_TEST_PG_URL")
    if given:
        yield given
        return
    from pg import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store database: a SQLite file, or the wiped PostgreSQL test database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    from pg import wipe

    url: str = request.getfixturevalue("pg_url")
    wipe(url)
    return url


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """``make test`` sets DOCPIPE_TEST_STRICT=1: it installs everything every test needs
    (Tesseract, PostgreSQL, Chromium, Ray, the models), so a skipped test there means a
    broken set-up and fails the run instead of passing quietly."""
    if not os.environ.get("DOCPIPE_TEST_STRICT") or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        reporter.ensure_newline()
        reporter.write_line(f"DOCPIPE_TEST_STRICT: {len(skipped)} test(s) skipped; make test installs "
                            "what every test needs, so a skip means the set-up is broken", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
