"""Fixtures of the docpipe-ner tests: tiny transformers token-classification models built
offline (no hub, no download), and text documents on disk.

Two models share one WordPiece vocabulary written here:

* ``random_model``: a 2-layer BERT with random weights, for the structure of the output;
* ``rule_model``: the same architecture with weights set by hand so each token's label
  depends on that token alone (attention and feed-forward outputs zeroed, positions
  zeroed, one embedding direction per label, the classifier reading it back). It tags
  ``angela``/``tim`` B-PER, ``merkel``/``cook`` I-PER, ``apple`` B-ORG, ``siemens``
  B-ORG, ``berlin``/``paris`` B-LOC, ``new`` B-LOC + ``york`` I-LOC and everything else O,
  so the real loading, windowing, word aggregation and offset code has exact answers.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# the fixture plugin imports as a top-level module in this process (and spawned workers)
sys.path.insert(0, str(Path(__file__).resolve().parent))

TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
RULES = {"angela": "B-PER", "tim": "B-PER", "merkel": "I-PER", "cook": "I-PER", "apple": "B-ORG",
         "siemens": "B-ORG", "berlin": "B-LOC", "paris": "B-LOC", "new": "B-LOC", "york": "I-LOC"}
WORDS = ["met", "of", "in", "on", "to", "the", "a", "and", "deal", "discuss", "billion", "may",
         "with", "at", "for", "visited", "from", "said"]
LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
#: tiny on purpose: long pages overflow the model and take the stride-window path
MAX_POSITIONS = 64


def vocabulary() -> list[str]:
    punctuation = list(".,;:!?$%'\"()-/")
    return [*SPECIAL, *RULES, *WORDS, *LETTERS, *punctuation, *(f"##{c}" for c in LETTERS)]


def build_model(folder: Path, rules: bool) -> Path:
    """Save a tiny BERT token classifier and its fast WordPiece tokenizer in ``folder``."""
    import torch
    from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast.from_pretrained(str(folder), model_max_length=MAX_POSITIONS)
    hidden = 32
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=MAX_POSITIONS, id2label=dict(enumerate(TAGS)),
                        label2id={t: i for i, t in enumerate(TAGS)})
    torch.manual_seed(0)
    model = BertForTokenClassification(config)
    if rules:
        with torch.no_grad():
            direction = torch.zeros(len(TAGS), hidden)
            for k in range(len(TAGS)):  # zero-mean, so LayerNorm keeps the direction
                direction[k, 2 * k], direction[k, 2 * k + 1] = 1.0, -1.0
            emb = model.bert.embeddings
            label_of = [TAGS.index(RULES.get(token, "O")) for token in vocab]
            emb.word_embeddings.weight.copy_(direction[label_of])
            emb.position_embeddings.weight.zero_()
            emb.token_type_embeddings.weight.zero_()
            for layer in model.bert.encoder.layer:
                for dense in (layer.attention.output.dense, layer.output.dense):
                    dense.weight.zero_()
                    dense.bias.zero_()
            model.classifier.weight.copy_(direction * 10)
            model.classifier.bias.zero_()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("random-ner"), rules=False)


@pytest.fixture(scope="session")
def rule_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("rule-ner"), rules=True)


@pytest.fixture
def text_files(tmp_path: Path) -> Callable[..., list[str]]:
    """Write text documents, pages separated by form feeds: text_files("a\\fb", "c") -> paths."""

    def write(*texts: str) -> list[str]:
        folder = tmp_path / "docs"
        folder.mkdir(exist_ok=True)
        paths = []
        for i, text in enumerate(texts):
            path = folder / f"doc{i:04d}.txt"
            path.write_text(text, encoding="utf-8")
            paths.append(str(path))
        return paths

    return write
