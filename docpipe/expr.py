"""The safe expression language of ``when``, ``expr`` and ``switch`` steps.

Expressions are Python-like (``language != "en" and page_count > 10``,
``len(needs_ocr_pages) > 0``, ``params.lang``) and evaluated by
`simpleeval <https://github.com/danthedeckie/simpleeval>`_, which walks the
parsed AST itself with a whitelist of node types and functions: flow text is
never passed to ``eval`` or ``exec``, there is no attribute access to dunders,
no imports.

Sizes are bounded *before* anything is allocated, because flow text may come
from anyone who can submit a flow:

* the text: at most :data:`MAX_TEXT` characters and :data:`MAX_DEPTH` levels of
  nesting (deeper ones are flow errors, not a ``RecursionError``);
* every string an expression makes (``+``, ``*``, ``%`` formatting, f-strings and
  their format specs, ``str()`` of a container, ``join``, ``replace``): at most
  :data:`MAX_STRING` characters each, and :data:`MAX_TOTAL` characters for one
  evaluation together; the width and precision in a format are checked before
  formatting;
* methods: only those of a short list per type (``str.lower``, ``dict.get``,
  ...); padding methods (``ljust``, ``center``, ``zfill``, ``format``) are not on it;
* the result: at most :data:`MAX_TOTAL` characters as text.

Names resolve to document-state keys; ``params`` is the run's flow params
(``params.lang`` or ``params["lang"]``). The planner uses :attr:`Expression.names`
(the free names) as the keys an expression reads.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

import simpleeval

from docpipe.errors import ExpressionError

#: longest expression text, in characters
MAX_TEXT = 10_000
#: deepest nesting of an expression's syntax tree
MAX_DEPTH = 100
#: longest string one operation may make
MAX_STRING = simpleeval.MAX_STRING_LENGTH
#: characters all the strings of one evaluation may add up to (and the result's size)
MAX_TOTAL = 1_000_000

#: methods an expression may call, by the exact type of the object
METHODS: dict[type, frozenset[str]] = {
    str: frozenset({
        "lower", "upper", "strip", "lstrip", "rstrip", "startswith", "endswith", "split",
        "rsplit", "splitlines", "count", "find", "rfind", "index", "rindex", "title",
        "capitalize", "casefold", "isdigit", "isalpha", "isalnum", "isspace", "isupper",
        "islower", "isnumeric", "isdecimal", "partition", "rpartition", "removeprefix",
        "removesuffix", "join", "replace"}),
    list: frozenset({"count", "index"}),
    tuple: frozenset({"count", "index"}),
    dict: frozenset({"get", "keys", "values", "items"}),
}

#: names that are never document-state keys
RESERVED = frozenset({"params", "True", "False", "None"})

# a printf-style conversion: flags, width (or *), precision (or .*)
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?[a-zA-Z%]")
# the numbers in a format spec (``>40``, ``08.3f``, ``{:,}``)
_SPEC_NUMBERS = re.compile(r"\d+")


class _Params(dict[str, Any]):
    """Flow params readable both as ``params.x`` and ``params["x"]``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _free_names(tree: ast.AST) -> set[str]:
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.comprehension):
            for target in ast.walk(node.target):
                if isinstance(target, ast.Name):
                    bound.add(target.id)
    called = {
        n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return names - bound - (called & _FUNCTION_NAMES) - RESERVED


def _depth(tree: ast.AST) -> int:
    """The nesting depth of ``tree``, walked without recursion."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def text_size(value: Any, budget: int) -> int:
    """About how many characters ``str(value)`` has, counted without making it; stops
    counting past ``budget`` (returns a number above it)."""
    size, stack = 0, [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str | bytes):
            size += len(v) + 3
        elif isinstance(v, dict):
            size += 2 + 4 * len(v)
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list | tuple | set | frozenset):
            size += 2 + 2 * len(v)
            stack.extend(v)
        elif isinstance(v, int) and not isinstance(v, bool):
            size += max(1, v.bit_length() * 30103 // 100000 + 2)  # log10(2) digits per bit
        else:
            size += 24  # floats, None, booleans
        if size > budget:
            return size
    return size


class _Budget:
    """What one evaluation has spent of :data:`MAX_TOTAL`."""

    def __init__(self) -> None:
        self.spent = 0

    def charge(self, n: int, what: str) -> None:
        if n > MAX_STRING:
            raise simpleeval.IterableTooLong(f"{what} would make more than {MAX_STRING:,} characters")
        self.spent += n
        if self.spent > MAX_TOTAL:
            raise simpleeval.IterableTooLong(
                f"the expression makes more than {MAX_TOTAL:,} characters of text in all")

    def text(self, value: Any, what: str = "str()") -> str:
        """``str(value)``, charged before it is made."""
        self.charge(text_size(value, MAX_STRING) if not isinstance(value, str) else len(value), what)
        return value if isinstance(value, str) else str(value)

    def check_spec(self, spec: str, what: str) -> None:
        """Refuse a format spec whose width or precision alone is too long."""
        for number in _SPEC_NUMBERS.findall(spec):
            if len(number) > 7 or int(number) > MAX_STRING:
                raise simpleeval.IterableTooLong(f"{what}: width or precision {number} is too large")

    # --- the string-making operations, bounded ----------------------------------------

    def mult(self, a: Any, b: Any) -> Any:
        for seq, n in ((a, b), (b, a)):
            if hasattr(seq, "__len__") and isinstance(n, int):
                self.charge(len(seq) * max(0, n), "'*'")
        return operator.mul(a, b)

    def add(self, a: Any, b: Any) -> Any:
        if hasattr(a, "__len__") and hasattr(b, "__len__"):
            self.charge(len(a) + len(b), "'+'")
        return operator.add(a, b)

    def mod(self, a: Any, b: Any) -> Any:
        if not isinstance(a, str | bytes):
            return operator.mod(a, b)
        fmt = a if isinstance(a, str) else a.decode("latin-1")
        for width, precision in _PRINTF.findall(fmt):
            if "*" in (width, precision):
                raise simpleeval.FeatureNotAvailable("'*' widths in '%' formats are not available")
            self.check_spec(f"{width}.{precision}", "'%' format")
        self.charge(len(a) + text_size(b, MAX_STRING), "'%' format")
        return operator.mod(a, b)

    def join(self, sep: str, items: Any) -> str:
        items = list(items)
        self.charge(len(sep) * max(0, len(items) - 1) + sum(text_size(i, MAX_STRING) for i in items),
                    "join()")
        return sep.join(items)

    def replace(self, s: str, old: str, new: str, count: int = -1) -> str:
        times = s.count(old) if old else len(s) + 1
        if count >= 0:
            times = min(times, count)
        self.charge(len(s) + times * max(0, len(new) - len(old)), "replace()")
        return s.replace(old, new, count)


class _Evaluator(simpleeval.EvalWithCompoundTypes):
    """simpleeval with docpipe's bounds (see the module docstring)."""

    def __init__(self) -> None:
        self.budget = _Budget()
        b = self.budget
        functions: dict[str, Callable[..., Any]] = {
            **_FUNCTIONS,
            "str": b.text,
            "lower": lambda s: b.text(s, "lower()").lower(),
            "upper": lambda s: b.text(s, "upper()").upper(),
        }
        operators = dict(simpleeval.DEFAULT_OPERATORS)
        operators.update({ast.Mult: b.mult, ast.Add: b.add, ast.Mod: b.mod})
        super().__init__(operators=operators, functions=functions, names={})

    def eval(self, expr: str, previously_parsed: Any = None) -> Any:
        self.budget.spent = 0
        return super().eval(expr, previously_parsed)

    def _eval_attribute(self, node: ast.Attribute) -> Any:
        if node.attr.startswith("_"):
            raise simpleeval.FeatureNotAvailable(f"'.{node.attr}' is not available")
        value = self._eval(node.value)
        if isinstance(value, _Params):
            if node.attr in value:
                return value[node.attr]
            raise simpleeval.AttributeDoesNotExist(node.attr, self.expr)
        allowed = METHODS.get(type(value), frozenset())
        if node.attr not in allowed:
            raise simpleeval.FeatureNotAvailable(
                f"'.{node.attr}' is not available on {type(value).__name__}"
                + (f" (available: {', '.join(sorted(allowed))})" if allowed else ""))
        if isinstance(value, str) and node.attr in ("join", "replace"):
            bounded = getattr(self.budget, node.attr)
            return lambda *args: bounded(value, *args)
        return getattr(value, node.attr)

    def _eval_joinedstr(self, node: ast.JoinedStr) -> str:
        return "".join(self.budget.text(self._eval(n), "f-string") for n in node.values)

    def _eval_formattedvalue(self, node: ast.FormattedValue) -> Any:
        value = self._eval(node.value)
        if node.conversion in (ord("r"), ord("a")):
            value = self.budget.text(value, "f-string")
        if node.format_spec:
            spec = self.budget.text(self._eval(node.format_spec), "f-string format")
            self.budget.check_spec(spec, "f-string format")
            self.budget.charge(text_size(value, MAX_STRING), "f-string")
            return format(value, spec)
        return value


_FUNCTIONS: dict[str, Any] = {
    "len": len,
    "int": int,
    "float": float,
    "bool": bool,
    "abs": abs,
    "min": min,
    "max": max,
    "sum": sum,
    "round": round,
    "any": any,
    "all": all,
    "sorted": sorted,
}
_FUNCTION_NAMES = frozenset({*_FUNCTIONS, "str", "lower", "upper", "list", "tuple", "dict", "set"})
#: the functions an expression may call
FUNCTIONS = sorted(_FUNCTION_NAMES)


class Expression:
    """A parsed expression; evaluate it many times against document states."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise ExpressionError("expression must be a non-empty string")
        if len(text) > MAX_TEXT:
            raise ExpressionError(f"expression is {len(text):,} characters long (at most {MAX_TEXT:,})")
        self.text = text
        self._shown = shown = text if len(text) <= 80 else text[:77] + "..."
        try:
            self._tree = simpleeval.SimpleEval.parse(text)
        except SyntaxError as exc:
            raise ExpressionError(f"cannot parse expression {shown!r}: {exc.msg}") from None
        except (RecursionError, MemoryError, ValueError):
            raise ExpressionError(f"cannot parse expression {shown!r}: it is nested too deeply") from None
        if not isinstance(self._tree, ast.Expr):
            raise ExpressionError(f"{shown!r} is a statement, not an expression")
        if _depth(self._tree) > MAX_DEPTH:
            raise ExpressionError(f"expression {shown!r} is nested more than {MAX_DEPTH} levels deep")
        self.names: frozenset[str] = frozenset(_free_names(self._tree))
        self._eval = _Evaluator()

    def false_by_params(self, params: Mapping[str, Any]) -> bool:
        """Whether the expression is false whatever a document holds: one of its ``and`` terms
        reads only flow params and is false (``params.model != None and language == 'de'``
        with no model). The engine does not start the pool of a step that can never run."""
        node = self._tree.value  # type: ignore[attr-defined]
        terms = node.values if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And) else [node]
        for term in terms:
            if _free_names(term):
                continue
            try:
                if not Expression(ast.unparse(term)).evaluate({}, params):
                    return True
            except ExpressionError:
                continue
        return False

    def evaluate(self, state: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> Any:
        names = {k: state.get(k) for k in self.names}
        names["params"] = _Params(params or {})
        self._eval.names = names
        try:
            value = self._eval.eval(self.text, previously_parsed=self._tree)
        except simpleeval.InvalidExpression as exc:
            raise ExpressionError(f"expression {self._shown!r}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - e.g. TypeError comparing None with int
            raise ExpressionError(f"expression {self._shown!r}: {type(exc).__name__}: {exc}") from None
        if text_size(value, MAX_TOTAL) > MAX_TOTAL:
            raise ExpressionError(f"expression {self._shown!r}: its value is larger than {MAX_TOTAL:,} "
                                  "characters as text")
        return value

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"
