"""hf.ner passes docpipe's block contract on both backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from docpipe_ner.block import Ner

from docpipe.testing import BlockContract

pytestmark = pytest.mark.ml

INPUTS = [
    {"page_texts": ["Angela Merkel met Tim Cook of Apple in Berlin.", "", "Paris, 3 May 2019."],
     "language": "en"},
    {"page_texts": [], "language": "en"},
    {"page_texts": ["no entities here"], "language": "en"},
    {"page_texts": ["Angela Merkel traf Tim Cook in Berlin."], "language": "de"},  # no model: unsupported
]


class TestNerSpacyContract(BlockContract):
    block = Ner
    params: ClassVar[dict[str, Any]] = {"labels": ["PERSON", "ORG", "LOC"]}
    inputs = INPUTS


class TestNerTransformersContract(BlockContract):
    block = Ner
    inputs = INPUTS

    @pytest.fixture(autouse=True)
    def _model_folder(self, random_model: Path) -> None:
        # the folder exists only once the session fixture built it
        self.params = {"backend": "transformers", "model": str(random_model), "max_chars": 200,
                       "overlap": 50}
