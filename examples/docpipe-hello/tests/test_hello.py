"""The example plugin's tests: run them with the package installed (``pip install -e .``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from docpipe_hello import Greet
from pydantic import ValidationError

from docpipe.testing import BlockContract, run_flow


class TestGreet(BlockContract):
    """The checks every block must pass: a valid manifest, params with a JSON Schema, a class
    workers can import, and one result per input holding exactly the declared writes."""

    block = Greet
    params = {"greeting": "bonjour"}
    inputs = [{"path": "/data/in/a.pdf"}, {"path": "b.png"}]  # exactly the keys it reads


def test_greets_each_document_in_order() -> None:
    batch = [{"path": "/data/in/a.pdf"}, {"path": "b.png"}]
    assert Greet().run(batch, Greet.Params()) == [
        {"greeting": "hello, a.pdf"},
        {"greeting": "hello, b.png"},
    ]


def test_unknown_params_are_rejected() -> None:
    with pytest.raises(ValidationError):
        Greet.Params(greting="hi")  # type: ignore[call-arg]


def test_a_flow_puts_the_greeting_in_its_outputs(tmp_path: Path) -> None:
    doc = tmp_path / "a.txt"
    doc.write_text("x")
    flow = {"name": "hello", "version": "1", "outputs": ["greeting"],
            "steps": [{"id": "greet", "block": "hello.greet", "params": {"greeting": "bonjour"}}]}
    (result,) = run_flow(flow, [doc]).results  # the plugin is found by its entry point
    assert result.status == "succeeded", result.error
    assert result.outputs == {"greeting": "bonjour, a.txt"}
