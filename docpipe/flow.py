"""Flow definitions: the JSON format, its JSON Schema, loading, hashing and the Python SDK.

A flow is JSON::

    {"name": "idp", "version": "1.0", "description": "...",
     "params": {"lang": "eng"},
     "outputs": ["page_count", "language"],
     "steps": [
        {"id": "text", "block": "pdf.text"},
        {"id": "stats", "block": "text.stats", "when": "page_count > 0"}
     ]}

A step is exactly one of: a *block* step (``block``, with optional ``params``,
``inputs`` = block read key -> state key and ``outputs`` = block write key ->
state key), ``expr`` (compute ``output`` from an expression), ``switch``
(``cases`` of step lists chosen by an expression's value, plus ``default``),
``map`` (run ``block`` once per item of a list, bound to the name ``as``, and
gather each written key into a list in order), ``fork`` (parallel branches,
each a list of steps run in order), ``join`` (wait for the named steps) and
``subflow`` (run another flow file on this document) and ``review`` (a person checks
or corrects keys an earlier step wrote: the run waits for the answer; see
docs/review.md). Every step may have a
``when`` condition and ``after`` (explicit ordering on top of the data
dependencies the planner derives from reads and writes).

A string param value of the form ``"${params.NAME}"`` takes the run's flow param.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema

from docpipe.errors import FlowError, FlowIssue
from docpipe.inputs import not_a_regular_file

SCHEMA_ID = "https://docpipe.dev/schema/flow-1.json"
STEP_KINDS = ("block", "expr", "switch", "map", "fork", "join", "subflow", "review")
#: what a person is asked in a review step (see docs/review.md)
REVIEW_KINDS = ("choose", "edit", "approve")

_KEY = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"}
_RENAMES = {"type": "object", "additionalProperties": _KEY}
_STEP_LIST = {"type": "array", "items": {"$ref": "#/$defs/step"}}
_KIND_KEYS = ("block", "map", "expr", "switch", "fork", "join", "subflow", "review")
#: what each kind of step requires; a step must match exactly one and carry no other kind's key
_KIND_REQUIRES = (("block",), ("map", "block"), ("expr", "output"), ("switch", "cases"),
                  ("fork",), ("join",), ("subflow",), ("review",))
_REVIEW = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind"],
    "description": "a person's check: choose one of choices (key), edit text values (keys), "
                   "approve or reject (key gets true/false)",
    "properties": {
        "kind": {"enum": list(REVIEW_KINDS)},
        "key": _KEY,
        "keys": {"type": "array", "items": _KEY, "minItems": 1},
        "choices": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "choices_from": {**_KEY, "description": "a key holding the choices: strings or {label, score}"},
        "prompt": {"type": "string"},
        "show": {"type": "array", "items": _KEY, "description": "keys shown to the reviewer"},
    },
    "allOf": [
        {"if": {"properties": {"kind": {"const": "choose"}}},
         "then": {"required": ["key"], "anyOf": [{"required": ["choices"]}, {"required": ["choices_from"]}],
                  "not": {"required": ["keys"]}}},
        {"if": {"properties": {"kind": {"const": "edit"}}},
         "then": {"required": ["keys"], "not": {"anyOf": [{"required": ["key"]}, {"required": ["choices"]},
                                                           {"required": ["choices_from"]}]}}},
        {"if": {"properties": {"kind": {"const": "approve"}}},
         "then": {"required": ["key"], "not": {"anyOf": [{"required": ["keys"]}, {"required": ["choices"]},
                                                          {"required": ["choices_from"]}]}}},
    ],
}

FLOW_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "docpipe flow definition",
    "type": "object",
    "required": ["name", "version", "steps"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string"},
        "name": {"type": "string", "minLength": 1, "description": "flow name, unique per store"},
        "version": {"type": "string", "minLength": 1, "description": "your version label"},
        "description": {"type": "string"},
        "params": {
            "type": "object",
            "description": "flow params and their defaults; `--param KEY=VALUE` overrides",
        },
        "outputs": {
            "type": "array",
            "items": _KEY,
            "description": "state keys exported as output columns (default: every written key)",
        },
        "steps": {**_STEP_LIST, "minItems": 1},
        "cache": {
            "type": "boolean",
            "description": "reuse the recorded outputs of a block step's earlier task with the same "
                           "block, model, params and inputs instead of running it (docs/provenance.md)",
        },
    },
    "$defs": {
        "step": {
            "type": "object",
            "required": ["id"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_.-]*$"},
                "description": {"type": "string"},
                "when": {"type": "string", "description": "run the step only when this is true"},
                "after": {"type": "array", "items": {"type": "string"}},
                "block": {"type": "string", "minLength": 1},
                "params": {"type": "object"},
                "inputs": _RENAMES,
                "outputs": _RENAMES,
                "expr": {"type": "string", "minLength": 1},
                "output": _KEY,
                "switch": {"type": "string", "minLength": 1},
                "cases": {"type": "object", "additionalProperties": _STEP_LIST},
                "default": _STEP_LIST,
                "map": _KEY,
                "as": _KEY,
                "fork": {"type": "array", "items": _STEP_LIST, "minItems": 1},
                "join": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "subflow": {"type": "string", "minLength": 1},
                "review": _REVIEW,
                "retry": {
                    "type": "object",
                    "additionalProperties": False,
                    "description": "retry policy of the step's tasks (overrides the block's)",
                    "properties": {
                        "max_attempts": {"type": "integer", "minimum": 1},
                        "backoff": {"enum": ["fixed", "exponential"]},
                        "delay": {"type": "number", "minimum": 0},
                        "max_delay": {"type": "number", "minimum": 0},
                        "jitter": {"type": "number", "minimum": 0, "maximum": 1},
                        "on": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "timeout": {
                    "type": "number", "exclusiveMinimum": 0,
                    "description": "seconds per input before the task is killed (thread/process blocks)",
                },
                "max_tasks_per_worker": {
                    "type": "integer", "minimum": 1,
                    "description": "replace a worker (after a clean exit, teardown included) once it "
                                   "ran this many tasks; process blocks only (overrides the block's)",
                },
                "workers": {
                    "type": "integer", "minimum": 1,
                    "description": "workers of the step's pool (thread/process blocks; overrides "
                                   "--workers and the block's cost hint)",
                },
                "cache": {
                    "type": "boolean",
                    "description": "this step's cache policy: false never reuses earlier outputs "
                                   "(a step with side effects), true reuses them whatever the flow says",
                },
                "max_worker_rss_mb": {
                    "type": "integer", "minimum": 1,
                    "description": "replace a worker (after a clean exit, teardown included) once its "
                                   "resident memory is past this many MiB after a call; process "
                                   "blocks only (overrides the block's)",
                },
            },
            "oneOf": [
                {"required": list(required),
                 "not": {"anyOf": [{"required": [k]} for k in _KIND_KEYS if k not in required]}}
                for required in _KIND_REQUIRES
            ],
        }
    },
}

_VALIDATOR = jsonschema.Draft202012Validator(FLOW_SCHEMA)


def step_kind(step: dict[str, Any]) -> str:
    """Which kind of step this is (``map`` wins over ``block``: a map step names its block)."""
    for kind in ("map", "expr", "switch", "fork", "join", "subflow", "review", "block"):
        if kind in step:
            return kind
    return "block"


def _step_at(definition: dict[str, Any], path: list[Any]) -> str | None:
    """The id of the innermost step containing a JSON path into the definition."""
    node: Any = definition
    found = None
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
        if isinstance(node, dict) and isinstance(node.get("id"), str):
            found = node["id"]
    return found


def schema_issues(definition: Any) -> list[FlowIssue]:
    """Every JSON Schema violation, each naming the step and key where it happened."""
    issues = []
    for err in sorted(_VALIDATOR.iter_errors(definition), key=lambda e: list(e.absolute_path)):
        path = list(err.absolute_path)
        key = next((p for p in reversed(path) if isinstance(p, str)), None)
        step = _step_at(definition, path) if isinstance(definition, dict) else None
        message = err.message
        if err.validator == "oneOf":
            message = (
                "a step must be exactly one of: block, expr (with output), switch (with cases), "
                "map (with block), fork, join, subflow, review"
            )
        location = "/".join(str(p) for p in path) or "(top level)"
        issues.append(FlowIssue(f"{message} (at {location})", step=step, key=key))
    return issues


_SECRET = re.compile(r"pass(word|wd|phrase)?|secret|token|credential|api_?key", re.IGNORECASE)
#: names that hold where a secret is, not the secret (``pdf_passwords_file``, ``password_env``)
_POINTER = re.compile(r"_(file|path|env|dir)$", re.IGNORECASE)


def redact_params(params: dict[str, Any]) -> dict[str, Any]:
    """Flow params as they may be recorded: values of secret-looking names masked."""
    return {k: ("***" if _SECRET.search(k) and not _POINTER.search(k) and v is not None else v)
            for k, v in params.items()}


def redact_definition(definition: dict[str, Any]) -> dict[str, Any]:
    """A flow definition as it may be recorded: secret-looking param defaults masked."""
    if not definition.get("params"):
        return definition
    return {**definition, "params": redact_params(definition["params"])}


def canonical_json(definition: dict[str, Any]) -> str:
    return json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(definition: dict[str, Any]) -> str:
    """sha256 of the canonical JSON: the identity of a flow version's exact content."""
    return hashlib.sha256(canonical_json(definition).encode()).hexdigest()


#: the largest flow file read (a flow is a few KiB; /dev/zero is endless)
MAX_FLOW_BYTES = 4 * 2**20


def load_definition(path: str | Path, *, foreign: bool = False) -> dict[str, Any]:
    """Read a flow file and check it against the JSON Schema (raises :class:`FlowError`).

    Only a regular file of at most :data:`MAX_FLOW_BYTES` is read (a FIFO would block, a
    device never end). With ``foreign`` (a subflow named inside a flow) a JSON file that is
    not a flow at all (no ``steps``) is reported without a word of its content."""
    p = Path(path)
    refused = not_a_regular_file(str(p))  # before opening: opening a FIFO blocks
    if refused is not None:
        raise FlowError([FlowIssue(f"flow file {p}: {refused}")], str(p))
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_FLOW_BYTES + 1)
    except FileNotFoundError:
        raise FlowError([FlowIssue(f"flow file {p} does not exist")], str(p)) from None
    except IsADirectoryError:
        raise FlowError([FlowIssue(f"flow file {p} is a folder")], str(p)) from None
    except OSError as exc:
        raise FlowError([FlowIssue(f"cannot read flow file {p}: {exc.strerror or exc}")], str(p)) from None
    if len(data) > MAX_FLOW_BYTES:
        raise FlowError([FlowIssue(f"flow file {p} is larger than {MAX_FLOW_BYTES // 2**20} MiB")], str(p))
    try:
        definition = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise FlowError([FlowIssue(f"flow file {p} is not UTF-8 text")], str(p)) from None
    except (json.JSONDecodeError, RecursionError) as exc:
        why = exc if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise FlowError([FlowIssue(f"not valid JSON: {why}")], str(p)) from None
    if foreign and not (isinstance(definition, dict) and "steps" in definition):
        raise FlowError([FlowIssue(f"{p.name} is not a flow definition (a JSON object with "
                                   "'steps')")], str(p))
    issues = schema_issues(definition)
    if issues:
        raise FlowError(issues, str(p))
    return definition  # type: ignore[no-any-return]


class Flow:
    """Build a flow definition in Python; ``to_json()`` gives the same JSON a file holds.

    >>> flow = (Flow("demo", "1.0")
    ...         .step("text", "pdf.text")
    ...         .expr("is_long", "page_count > 10", output="long"))
    >>> Flow.from_dict(json.loads(flow.to_json())).to_dict() == flow.to_dict()
    True
    """

    def __init__(
        self,
        name: str,
        version: str = "1.0",
        description: str = "",
        params: dict[str, Any] | None = None,
        outputs: list[str] | None = None,
        cache: bool | None = None,
    ) -> None:
        """``cache``: the flow's cache policy (docs/provenance.md); a step takes ``cache=False``."""
        self._def: dict[str, Any] = {"name": name, "version": version}
        if description:
            self._def["description"] = description
        if params:
            self._def["params"] = dict(params)
        if outputs is not None:
            self._def["outputs"] = list(outputs)
        if cache is not None:
            self._def["cache"] = cache
        self._def["steps"] = []

    # --- steps ------------------------------------------------------------------------
    def add(self, step: dict[str, Any]) -> Flow:
        """Append a step given as its JSON dict (see :func:`step` and friends)."""
        self._def["steps"].append(step)
        return self

    def step(self, id: str, block: str, **fields: Any) -> Flow:  # noqa: A002 - JSON field name
        return self.add(step(id, block, **fields))

    def expr(self, id: str, expression: str, output: str, **fields: Any) -> Flow:  # noqa: A002
        return self.add({"id": id, "expr": expression, "output": output, **fields})

    def map(self, id: str, over: str, block: str, as_: str = "item", **fields: Any) -> Flow:  # noqa: A002
        return self.add({"id": id, "map": over, "as": as_, "block": block, **fields})

    def switch(
        self,
        id: str,  # noqa: A002
        expression: str,
        cases: dict[str, list[dict[str, Any]]],
        default: list[dict[str, Any]] | None = None,
        **fields: Any,
    ) -> Flow:
        s: dict[str, Any] = {"id": id, "switch": expression, "cases": cases, **fields}
        if default is not None:
            s["default"] = default
        return self.add(s)

    def fork(self, id: str, *branches: list[dict[str, Any]], **fields: Any) -> Flow:  # noqa: A002
        return self.add({"id": id, "fork": [list(b) for b in branches], **fields})

    def join(self, id: str, *steps: str, **fields: Any) -> Flow:  # noqa: A002
        return self.add({"id": id, "join": list(steps), **fields})

    def subflow(self, id: str, path: str, **fields: Any) -> Flow:  # noqa: A002
        return self.add({"id": id, "subflow": path, **fields})

    def review(self, id: str, kind: str, key: str | None = None, *,  # noqa: A002
               keys: list[str] | None = None, choices: list[str] | None = None,
               choices_from: str | None = None, prompt: str | None = None,
               show: list[str] | None = None, **fields: Any) -> Flow:
        """A review step: ``choose`` one of ``choices`` (or those ``choices_from`` holds) for
        ``key``, ``edit`` the text values of ``keys``, ``approve`` (``key`` gets true/false)."""
        spec: dict[str, Any] = {"kind": kind}
        for name, value in (("key", key), ("keys", keys), ("choices", choices),
                            ("choices_from", choices_from), ("prompt", prompt), ("show", show)):
            if value is not None:
                spec[name] = list(value) if isinstance(value, list) else value
        return self.add({"id": id, "review": spec, **fields})

    # --- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._def)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self._def, indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, definition: dict[str, Any]) -> Flow:
        issues = schema_issues(definition)
        if issues:
            raise FlowError(issues, definition.get("name") if isinstance(definition, dict) else None)
        flow = cls.__new__(cls)
        flow._def = copy.deepcopy(definition)
        return flow

    @classmethod
    def load(cls, path: str | Path) -> Flow:
        return cls.from_dict(load_definition(path))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")


def step(id: str, block: str, **fields: Any) -> dict[str, Any]:  # noqa: A002
    """A block step as a dict, for switch cases and fork branches built in Python."""
    return {"id": id, "block": block, **fields}
