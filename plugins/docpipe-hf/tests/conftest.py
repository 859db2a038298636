"""Fixtures of the docpipe-hf tests: the document-type classifier (built when missing) and a
tiny MarianMT model built offline from text in this repository. Nothing touches the network:
``HF_HUB_OFFLINE`` is set (in :mod:`hf_helpers`) before transformers loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from hf_helpers import build_tiny_marian, ensure_doctype


@pytest.fixture(scope="session")
def doctype_model() -> Path:
    return ensure_doctype()


@pytest.fixture(scope="session")
def marian_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_marian(tmp_path_factory.mktemp("tiny-marian"))
