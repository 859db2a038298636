"""Plugin discovery: entry points, --plugin paths, broken plugins, the example package."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import ROOT, TOYS, run_cli

import docpipe
from docpipe import hookspecs
from docpipe.blocks import Block, Manifest
from docpipe.plugins import Registry


def fake_distribution(site: Path, name: str, module_source: str) -> None:
    """A real installed distribution (dist-info + entry point), without pip: put ``site``
    on PYTHONPATH and importlib.metadata finds it like any installed package."""
    module = f"{name}_plugin"
    (site / f"{module}.py").write_text(textwrap.dedent(module_source))
    info = site / f"{name}-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[docpipe]\n{name} = {module}\n")


def blocks_json(*args: str, env: dict[str, str] | None = None) -> dict:
    proc = run_cli("blocks", "--json", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_builtin_blocks_come_through_entry_points():
    listing = blocks_json()
    by_name = {b["name"]: b for b in listing["blocks"]}
    assert by_name["pdf.text"]["distribution"] == "docpipe-pdf"
    assert by_name["pdf.text"]["runtime"] == "process"
    assert by_name["pdf.text"]["reads"] == {"path": "str"}
    assert "page_count" in by_name["pdf.text"]["writes"]


def test_a_plugin_that_fails_to_import_is_listed_as_broken(tmp_path):
    fake_distribution(tmp_path, "brokenthing", "raise ImportError('needs libfoo 2.0')\n")
    env = {"PYTHONPATH": str(tmp_path)}
    listing = blocks_json(env=env)
    assert {"plugin": "brokenthing", "distribution": "brokenthing",
            "error": "ImportError: needs libfoo 2.0"} in listing["broken"]
    assert any(b["name"] == "pdf.text" for b in listing["blocks"])  # the rest still load
    table = run_cli("blocks", env=env)
    assert table.returncode == 0
    assert "broken plugin 'brokenthing'" in table.stdout
    assert "needs libfoo 2.0" in table.stdout
    assert "page_texts: list[str]" in table.stdout  # full types: '[str]' is not lost as markup
    disabled = blocks_json(env={**env, "DOCPIPE_DISABLE_PLUGINS": "brokenthing"})
    assert disabled["broken"] == []


def test_disable_all_entry_points(tmp_path):
    listing = blocks_json("--plugin", TOYS, env={"DOCPIPE_DISABLE_PLUGINS": "*"})
    names = {b["name"] for b in listing["blocks"]}
    assert "pdf.text" not in names and "toy.read" in names


def test_bad_registrations_are_broken_not_fatal():
    class NoWrites(Block):
        manifest = Manifest(name="x.nowrites", version="1", runtime="inline")

    class Dup(Block):
        manifest = Manifest(name="toy.read", version="9", writes={"a": str})

    class Plugin:
        @docpipe.hookimpl
        def register_blocks(self, register):
            register(NoWrites)
            register(Dup)
            register(int)

    reg = Registry(entry_points=False, extra=[TOYS, Plugin()])
    errors = " | ".join(b.error for b in reg.broken)
    assert "manifest.writes is empty" in errors
    assert "'toy.read' is already registered" in errors
    assert "not a docpipe.Block subclass" in errors
    assert reg.get("toy.read").cls.manifest.version == "1.0"


def test_a_misspelt_hook_is_reported(tmp_path):
    bad = tmp_path / "typo_plugin.py"
    bad.write_text("import docpipe\n@docpipe.hookimpl\ndef register_block(register):\n    pass\n")
    reg = Registry(entry_points=False, extra=[str(bad)])
    assert reg.broken and "register_block" in reg.broken[0].error


@pytest.mark.slow
def test_example_package_installs_lists_and_runs(tmp_path):
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps"]
    subprocess.run([*pip, str(ROOT / "examples" / "docpipe-hello")], check=True)
    try:
        listing = blocks_json()
        hello = next(b for b in listing["blocks"] if b["name"] == "hello.greet")
        assert hello["distribution"] == "docpipe-hello"
        assert hello["params"]["properties"]["greeting"]["default"] == "hello"
        assert "hello.greet" in run_cli("blocks").stdout
        flow = tmp_path / "hello.json"
        flow.write_text(json.dumps({"name": "hello", "version": "1", "outputs": ["greeting"],
                                    "steps": [{"id": "greet", "block": "hello.greet",
                                               "params": {"greeting": "bonjour"}}]}))
        (tmp_path / "in").mkdir()
        (tmp_path / "in" / "a.txt").write_text("x")
        out = tmp_path / "out.csv"
        proc = run_cli("run", str(flow), str(tmp_path / "in"), "--out", str(out),
                       "--db", f"sqlite:///{tmp_path / 'd.db'}", "-q")
        assert proc.returncode == 0, proc.stderr
        assert "bonjour, a.txt" in out.read_text()
    finally:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", "docpipe-hello"],
                       check=True)


def test_every_hook_is_documented_and_tested():
    hooks = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction)
             if hasattr(f, "docpipe_spec")]
    assert hooks == ["register_blocks", "register_models", "register_sinks", "register_sources"]
    docs = (ROOT / "docs" / "hooks.md").read_text()
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    for hook in hooks:
        assert f"## {hook}" in docs, f"docs/hooks.md has no heading for {hook}"
        assert f"def {hook}(" in tests or f"def {hook}(" in Path(TOYS).read_text()
