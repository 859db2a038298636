"""Helpers of the docpipe-hf tests (a module with a name of its own, so that it never
collides with another folder's ``conftest``): paths, the build script as a module, the
document-type classifier built when missing, and a tiny MarianMT model built offline.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[3]
MODELS = ROOT / "models"
DOCTYPE = MODELS / "doctype"
SAMPLES = ROOT / "samples"
#: the time `python models/build_doctype.py` may take here before the tests give up
BUILD_TIMEOUT = 900


def models_script(name: str) -> ModuleType:
    """``models/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, MODELS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_script() -> ModuleType:
    """``models/build_doctype.py`` as a module: its :func:`split` is the held-out split."""
    return models_script("build_doctype")


def doctype_ready() -> bool:
    """Whether models/doctype is built, and built from the labelled data as it is now (a
    model trained on older data could have seen today's held-out texts)."""
    metrics = DOCTYPE / "metrics.json"
    if not ((DOCTYPE / "config.json").is_file() and (DOCTYPE / "model.safetensors").is_file()
            and metrics.is_file()):
        return False
    return json.loads(metrics.read_text(encoding="utf-8")).get("data_sha256") == \
        build_script().data_digest()


def ensure_doctype() -> Path:
    """``models/doctype``, built the way `make models` builds it when it is missing or stale.
    A lock file keeps parallel test workers from building it twice."""
    if doctype_ready():
        return DOCTYPE
    MODELS.mkdir(exist_ok=True)
    with open(MODELS / ".doctype.build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not doctype_ready():
            done = subprocess.run([sys.executable, str(MODELS / "build_doctype.py"), "--quiet"],
                                  capture_output=True, text=True, timeout=BUILD_TIMEOUT)
            assert done.returncode == 0, f"building models/doctype failed:\n{done.stderr[-3000:]}"
    return DOCTYPE


def corpus() -> list[str]:
    """Text in this repository to train the tiny model's sentencepiece vocabulary on: the
    README and the labelled document texts (English, German, French)."""
    lines = [line.strip() for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
             if line.strip()]
    data = MODELS / "data" / "doctype.jsonl"
    lines += [json.loads(row)["text"].replace("\n", " ")
              for row in data.read_text(encoding="utf-8").splitlines() if row]
    return lines


def build_tiny_marian(out: Path) -> Path:
    """A MarianMT folder with a real tokenizer (sentencepiece trained on :func:`corpus`,
    ``source.spm``/``target.spm``/``vocab.json``) and tiny random weights: it loads, chunks
    and generates exactly like a real opus-mt model, and its output means nothing."""
    import sentencepiece as spm
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out.mkdir(parents=True, exist_ok=True)
    text = out / "corpus.txt"
    text.write_text("\n".join(corpus()) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(out / "spm"), vocab_size=500, model_type="unigram",
        character_coverage=1.0, num_threads=1, minloglevel=2, seed_sentencepiece_size=50000)
    sp = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    specials = {"<unk>", "<s>", "</s>"}
    tokens = ["</s>", "<unk>", *(p for p in pieces if p not in specials), "<pad>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    for name in ("source.spm", "target.spm"):
        (out / name).write_bytes((out / "spm.model").read_bytes())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*sacremoses.*")  # an optional normaliser
        tokenizer = MarianTokenizer(source_spm=str(out / "source.spm"),
                                    target_spm=str(out / "target.spm"),
                                    vocab=str(out / "vocab.json"), source_lang="de", target_lang="en")
    pad = vocab["<pad>"]
    config = MarianConfig(
        vocab_size=len(vocab), d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_position_embeddings=512, pad_token_id=pad, eos_token_id=0,
        decoder_start_token_id=pad, forced_eos_token_id=0)
    torch.manual_seed(0)
    MarianMTModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    for scratch in ("corpus.txt", "spm.model", "spm.vocab"):
        (out / scratch).unlink()
    return out
