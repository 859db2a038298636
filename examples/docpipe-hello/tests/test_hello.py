from __future__ import annotations

import pytest
from docpipe_hello import Greet
from pydantic import ValidationError


def test_manifest_is_valid() -> None:
    assert Greet.manifest.problems() == []


def test_greets_each_document_in_order() -> None:
    batch = [{"path": "/data/in/a.pdf"}, {"path": "b.png"}]
    assert Greet().run(batch, Greet.Params()) == [
        {"greeting": "hello, a.pdf"},
        {"greeting": "hello, b.png"},
    ]


def test_greeting_param() -> None:
    (result,) = Greet().run([{"path": "a.pdf"}], Greet.Params(greeting="bonjour"))
    assert result == {"greeting": "bonjour, a.pdf"}


def test_unknown_params_are_rejected() -> None:
    with pytest.raises(ValidationError):
        Greet.Params(greting="hi")  # type: ignore[call-arg]
