"""The layers hold: the service under two faces (the CLI and the server), and nothing
under the faces reaches up into them. Read from each module's imports with ``ast``, so a
rule is checked without importing anything."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "docpipe"


def _package_of(path: Path, root: Path) -> str:
    """The package a module at ``path`` (under ``root``) belongs to: ``docpipe.server``."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1])


def _imports(path: Path, root: Path = ROOT) -> Iterator[tuple[int, str]]:
    """(line, module) for each module ``path`` imports, relative imports made absolute;
    ``from a import b`` yields ``a.b`` too (``b`` may be a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = _package_of(path, root)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def _exits(path: Path) -> Iterator[int]:
    """Lines of ``path`` that call ``sys.exit`` (or ``exit`` imported from sys)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    from_sys = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "sys"
                for a in n.names if a.name == "exit"}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if (isinstance(f, ast.Attribute) and f.attr == "exit" and isinstance(f.value, ast.Name)
                and f.value.id == "sys") or (isinstance(f, ast.Name) and f.id in from_sys):
            yield node.lineno


def _modules(outside: str | None = None) -> list[Path]:
    """Every module of the docpipe package (but those under ``docpipe/<outside>/``)."""
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if outside is None or not p.is_relative_to(PACKAGE / outside))


def _is(module: str, *names: str) -> bool:
    return any(module == n or module.startswith(n + ".") for n in names)


def _offences(paths: list[Path], *names: str, root: Path = ROOT) -> list[str]:
    """``file:line imports module`` for each import in ``paths`` of ``names`` or a submodule."""
    return [f"{p.relative_to(root)}:{line} imports {m}" for p in paths for line, m in _imports(p, root)
            if _is(m, *names)]


def test_nothing_outside_the_cli_imports_it():
    assert _offences(_modules(outside="cli"), "docpipe.cli") == []


def test_only_the_cli_imports_click_and_rich_console():
    assert _offences(_modules(outside="cli"), "click", "rich.console") == []


def test_only_the_cli_calls_sys_exit():
    calls = [f"{p.relative_to(ROOT)}:{line}" for p in _modules(outside="cli") for line in _exits(p)]
    assert calls == []


def test_only_the_server_imports_fastapi_and_starlette():
    assert _offences(_modules(outside="server"), "fastapi", "starlette") == []


def test_only_docpipe_serve_imports_the_server():
    """The one edge between the faces: ``docpipe serve`` starts the server."""
    serve = PACKAGE / "cli" / "serve.py"
    paths = [p for p in _modules(outside="server") if p != serve]
    assert _offences(paths, "docpipe.server") == []


def test_the_service_imports_no_face():
    service = sorted((PACKAGE / "service").rglob("*.py"))
    assert service, "docpipe/service/ is gone"
    assert _offences(service, "docpipe.cli", "docpipe.server", "click", "rich", "fastapi", "starlette",
                     "uvicorn") == []


@pytest.mark.parametrize(("source", "found"), [
    ("import docpipe.cli\n", True),
    ("from docpipe import cli\n", True),
    ("from docpipe.cli.options import err\n", True),
    ("from ..cli import main\n", True),  # relative, from docpipe/server/x.py
    ("from docpipe import clients\n", False),
    ("import docpipe.client\n", False),
])
def test_the_import_reader_sees_every_spelling(tmp_path, source, found):
    """A rule that cannot see ``from docpipe import cli`` would pass whatever the code."""
    fake = tmp_path / "docpipe" / "server" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(source)
    assert bool(_offences([fake], "docpipe.cli", root=tmp_path)) is found


@pytest.mark.parametrize(("source", "found"), [
    ("import sys\nsys.exit(2)\n", True),
    ("from sys import exit as bye\nbye(1)\n", True),
    ("import os\nos._exit(0)\n", False),
])
def test_the_exit_reader_sees_every_spelling(tmp_path, source, found):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert bool(list(_exits(path))) is found
