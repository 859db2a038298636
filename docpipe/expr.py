"""The safe expression language of ``when``, ``expr`` and ``switch`` steps.

Expressions are Python-like (``language != "en" and page_count > 10``,
``len(needs_ocr_pages) > 0``, ``params.lang``) and evaluated by
`simpleeval <https://github.com/danthedeckie/simpleeval>`_, which walks the
parsed AST itself with a whitelist of node types and functions: flow text is
never passed to ``eval`` or ``exec``, there is no attribute access to dunders,
no imports, and sizes of strings, powers and comprehensions are bounded.

Names resolve to document-state keys; ``params`` is the run's flow params
(``params.lang`` or ``params["lang"]``). The planner uses :attr:`Expression.names`
(the free names) as the keys an expression reads.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

import simpleeval

from docpipe.errors import ExpressionError

FUNCTIONS: dict[str, Any] = {
    "len": len,
    "str": str,
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
    "lower": lambda s: str(s).lower(),
    "upper": lambda s: str(s).upper(),
}

#: names that are never document-state keys
RESERVED = frozenset({"params", "True", "False", "None"})


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
    return names - bound - (called & FUNCTIONS.keys()) - RESERVED


class Expression:
    """A parsed expression; evaluate it many times against document states."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise ExpressionError("expression must be a non-empty string")
        self.text = text
        try:
            self._tree = simpleeval.SimpleEval.parse(text)
        except SyntaxError as exc:
            raise ExpressionError(f"cannot parse expression {text!r}: {exc.msg}") from None
        if not isinstance(self._tree, ast.Expr):
            raise ExpressionError(f"{text!r} is a statement, not an expression")
        self.names: frozenset[str] = frozenset(_free_names(self._tree))
        self._eval = simpleeval.EvalWithCompoundTypes(functions=dict(FUNCTIONS), names={})

    def evaluate(self, state: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> Any:
        names = {k: state.get(k) for k in self.names}
        names["params"] = _Params(params or {})
        self._eval.names = names
        try:
            return self._eval.eval(self.text, previously_parsed=self._tree)
        except simpleeval.InvalidExpression as exc:
            raise ExpressionError(f"expression {self.text!r}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - e.g. TypeError comparing None with int
            raise ExpressionError(f"expression {self.text!r}: {type(exc).__name__}: {exc}") from None

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"
