from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, TOYS

from docpipe.planner import Plan, build_plan
from docpipe.plugins import Registry

# fixture plugins import as top-level modules (`toys`), the way `--plugin FILE` loads them
sys.path.insert(0, str(ROOT / "tests" / "plugins"))


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
