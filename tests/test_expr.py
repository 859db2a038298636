from __future__ import annotations

import pytest

from docpipe.errors import ExpressionError
from docpipe.expr import Expression


def test_names_are_the_keys_an_expression_reads():
    e = Expression("language != 'en' and len([p for p in pages if p > 1]) > params.n")
    assert e.names == {"language", "pages"}
    assert e.evaluate({"language": "de", "pages": [1, 2, 3]}, {"n": 1}) is True
    assert e.evaluate({"language": "en", "pages": [1, 2, 3]}, {"n": 1}) is False


@pytest.mark.parametrize("text", [
    "__import__('os').system('true')",
    "open('/etc/passwd').read()",
    "text.__class__.__mro__",
    "eval('1')",
    "(lambda: 1)()",
])
def test_unsafe_expressions_are_refused(text):
    with pytest.raises(ExpressionError):
        Expression(text).evaluate({"text": "x"})


def test_statements_and_syntax_errors_are_refused_at_parse_time():
    with pytest.raises(ExpressionError):
        Expression("x = 1")
    with pytest.raises(ExpressionError):
        Expression("x +")


def test_huge_results_are_bounded():
    with pytest.raises(ExpressionError):
        Expression("'x' * 10**9").evaluate({})


def test_missing_keys_are_none_and_type_errors_are_expression_errors():
    assert Expression("missing is None").evaluate({}) is True
    with pytest.raises(ExpressionError, match="TypeError"):
        Expression("missing > 3").evaluate({})
