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


ALLOCATION_ATTACKS = [
    "'%04000000000d' % 1",              # printf width: 4 GB
    "'%*d' % (10**9, 1)",               # width from an argument
    "'x'.ljust(10**9)",                 # padding methods are not available
    "'{:>1000000000}'.format(1)",
    "f'{1:>4000000000}'",               # f-string format spec
    "str(['a'*99999]*99999)",           # str() of a container: ~10 GB
    "f'{[\"a\"*99999]*99999}'",
    "lower(['a'*99999]*99999)",
    "'%s' % (['a'*99999]*99999,)",
    "', '.join(['a'*99999]*99999)",
    "('a'*99999).replace('a', 'a'*1000)",
    "[x*99999 for x in 'a'*10000]",     # many strings below the per-string cap: the total
    "[1]*10**9",
    "str(10**100000)",
]


@pytest.mark.parametrize("text", ALLOCATION_ATTACKS)
def test_string_making_operations_are_bounded_before_they_allocate(text):
    with pytest.raises(ExpressionError):
        Expression(text).evaluate({})


def test_the_attacks_stay_within_a_small_memory_limit():
    """In a process limited to 512 MiB of address space each attack is refused (an attack that
    allocated first would die with MemoryError instead of an ExpressionError)."""
    import json
    import subprocess
    import sys

    code = (
        "import json, resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (512 * 2**20, 512 * 2**20))\n"
        "from docpipe.expr import Expression\n"
        "from docpipe.errors import ExpressionError\n"
        "out = []\n"
        "for text in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        Expression(text).evaluate({})\n"
        "        out.append('evaluated')\n"
        "    except ExpressionError:\n"
        "        out.append('refused')\n"
        "print(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(ALLOCATION_ATTACKS)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == ["refused"] * len(ALLOCATION_ATTACKS)


@pytest.mark.parametrize("text", [
    "-" * 3000 + "1", "not " * 2400 + "1", "1+" * 4999 + "1", "x" + "[0]" * 2400,
    "not " * 50000 + "1", "1+" * 100000 + "1", "(" * 500 + "1" + ")" * 500,
])
def test_deep_or_huge_expressions_are_refused_when_parsed(text):
    with pytest.raises(ExpressionError, match="nested|characters long|parentheses"):
        Expression(text)


def test_what_flows_need_still_works():
    e = Expression("', '.join(sorted(k.lower() for k in keywords)) + f' ({len(keywords):>3})'")
    assert e.evaluate({"keywords": ["B", "a"]}) == "a, b (  2)"
    assert Expression("'%05.1f%%' % score").evaluate({"score": 9.25}) == "009.2%"
    assert Expression("title.replace('-', ' ').strip()").evaluate({"title": "-a-b-"}) == "a b"
    assert Expression("meta.get('author', 'n/a')").evaluate({"meta": {}}) == "n/a"
    assert Expression("params.lang").evaluate({}, {"lang": "de"}) == "de"
    with pytest.raises(ExpressionError, match="not available"):
        Expression("meta.clear()").evaluate({"meta": {}})
