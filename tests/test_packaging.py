"""Issue 14: docpipe installs from its built files alone, under its own name.

The distribution is ``docpipe-idp`` (``docpipe`` on the package index is another project);
the import package and the command stay ``docpipe``. This builds the wheels of docpipe-idp
and of every built-in plugin, installs them (and nothing of this checkout) into a fresh
virtual environment, and runs the real CLI from another folder: the plugins load from the
wheels through their entry points, the store's migrations and the UI's templates are in the
wheel, and a document runs through the idp flow.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").exists())

pytestmark = pytest.mark.slow


def test_every_distribution_depends_on_docpipe_idp_not_on_the_other_docpipe() -> None:
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert core["name"] == "docpipe-idp" and core["scripts"] == {"docpipe": "docpipe.cli:entrypoint"}
    for folder in [*PLUGINS, ROOT / "examples" / "docpipe-hello"]:
        deps = tomllib.loads((folder / "pyproject.toml").read_text())["project"]["dependencies"]
        assert "docpipe-idp" in deps and "docpipe" not in deps, folder.name


def _ours(name: str) -> bool:
    """A site-packages entry of this checkout's editable installs (left out of the fresh venv)."""
    lower = name.lower()
    return lower.startswith(("docpipe", "__editable__", "_docpipe")) or lower.endswith(".pth")


def test_the_wheels_install_and_run_in_a_fresh_environment(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(dist), str(ROOT), *map(str, PLUGINS)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    wheels = sorted(p.name for p in dist.glob("*.whl"))
    assert [w.split("-")[0] for w in wheels] == sorted(
        ["docpipe_idp", *(p.name.replace("-", "_") for p in PLUGINS)])

    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True, timeout=120)
    python = fresh / "bin" / "python"
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                                "--no-index", "--no-deps", *map(str, dist.glob("*.whl"))],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    # the third-party libraries come from this environment (no network here), through a folder
    # of links that leaves out everything of this checkout
    deps = tmp_path / "deps"
    deps.mkdir()
    here = Path(sysconfig.get_paths()["purelib"])
    for entry in here.iterdir():
        if not _ours(entry.name):
            (deps / entry.name).symlink_to(entry)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "zz-deps.pth").write_text(str(deps) + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "DOCPIPE_MODELS": str(ROOT / "models"), "DOCPIPE_PDF_PASSWORD": "docpipe",
           "PYTHONPATH": "", "COLUMNS": "200"}
    docpipe = str(fresh / "bin" / "docpipe")
    where = subprocess.run([str(python), "-c", "import docpipe, docpipe_pdf, importlib.metadata as m; "
                            "print(docpipe.__file__); print(docpipe_pdf.__file__); "
                            "print(m.version('docpipe-idp'))"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    core_file, plugin_file, version = where.stdout.split()
    assert core_file.startswith(str(fresh)) and plugin_file.startswith(str(fresh))  # the wheels
    assert version == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

    blocks = subprocess.run([docpipe, "blocks", "--json"], cwd=work, env=env, capture_output=True,
                            text=True, timeout=120)
    assert blocks.returncode == 0, blocks.stderr
    listing = json.loads(blocks.stdout)
    assert listing["broken"] == []
    names = {b["name"] for b in listing["blocks"]}
    assert {"pdf.decrypt", "pdf.text", "ocr.tesseract", "text.language", "hf.classify", "hf.ner"} <= names

    out = work / "r.csv"
    run = subprocess.run([docpipe, "run", str(ROOT / "flows" / "idp.json"), str(ROOT / "samples" / "invoice.pdf"),
                          str(ROOT / "samples" / "encrypted.pdf"), "--out", str(out), "-q"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = list(csv.DictReader(out.open()))
    assert [r["status"] for r in rows] == ["succeeded", "succeeded"]
    assert (work / ".docpipe" / "docpipe.db").exists()  # the store, migrated from the wheel's files
    count = ("import docpipe.server, pathlib; "
             "print(len(list((pathlib.Path(docpipe.server.__file__).parent / 'templates').iterdir())))")
    templates = subprocess.run([str(python), "-c", count], cwd=work, env=env, capture_output=True,
                               text=True, timeout=60)
    assert templates.returncode == 0 and int(templates.stdout) > 0, templates.stderr
