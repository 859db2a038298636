"""The planner: a validated flow definition -> a graph of nodes the engine can drive.

The graph comes from what each step reads and writes (plus explicit ``after``,
``fork`` and ``join`` ordering and the guards of ``switch`` cases); the order
steps are listed in does not matter. Every problem is collected and reported
together, each naming the step and the key: a flow param given that the flow
does not declare, an unknown block or step param (with the closest name as a
suggestion), params that do not fit the block's ``Params`` model (a folder or
file param naming one that does not exist included), a read that no step
writes, two steps writing the same key (allowed only for the exclusive cases of
one switch), a reader whose type does not match the writer's, cycles.

Root causes come first. What an unknown block would have written is missing
downstream: when the suggested block would write a key, reads of that key are
not reported (the unknown block's issue says how many were left out); when no
block is suggested, such reads are reported last, marked as perhaps caused by it.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from docpipe.artifacts import WORK_DIR_KEY
from docpipe.blocks import Artifact, Block, Retry, type_name, types_compatible
from docpipe.errors import ExpressionError, FlowError, FlowIssue
from docpipe.expr import Expression
from docpipe.flow import content_hash, load_definition, schema_issues, step_kind
from docpipe.plugins import BlockInfo, Registry

#: keys every document starts with: its file, and its run's folder for artifacts
INITIAL_KEYS: dict[str, Any] = {"path": str, WORK_DIR_KEY: str}
_PARAM_REF = re.compile(r"^\$\{params\.([A-Za-z_][A-Za-z0-9_]*)\}$")
_COLLECTIONS = ("list", "dict", "tuple", "set", "frozenset")


@dataclass(eq=False)
class Node:
    """One schedulable step of a plan."""

    idx: int
    id: str
    kind: str  # block | map | expr | switch | join | subflow
    block: BlockInfo | None = None
    params: BaseModel | None = None
    #: block key -> state key (block and map steps)
    reads: dict[str, str] = field(default_factory=dict)
    #: the block's own write keys (what its results must hold)
    block_writes: frozenset[str] = frozenset()
    writes: dict[str, str] = field(default_factory=dict)
    #: state keys whose absence skips the node (data reads; expressions see None instead)
    needs: tuple[str, ...] = ()
    when: Expression | None = None
    expr: Expression | None = None
    output: str | None = None
    cases: tuple[str, ...] = ()
    has_default: bool = False
    #: (switch node idx, case) pairs that must all hold for the node to run
    guards: tuple[tuple[int, str], ...] = ()
    map_over: str | None = None
    map_as: str | None = None
    subplan: Plan | None = None
    retry: Retry = Retry()
    timeout: float | None = None
    deps: set[int] = field(default_factory=set)
    dependents: list[int] = field(default_factory=list)

    # cached: read on every task; only valid once planning finished (the engine's view)
    @cached_property
    def runtime(self) -> str:
        return self.block.cls.manifest.runtime if self.block else "inline"

    @cached_property
    def label(self) -> str:
        return self.block.name if self.block else self.kind

    @cached_property
    def uses_work_dir(self) -> bool:
        """Whether the block reads the run's folder (the engine makes it first)."""
        return WORK_DIR_KEY in self.reads.values()

    @cached_property
    def artifact_keys(self) -> tuple[str, ...]:
        """The state keys this step writes that hold artifact paths (files in the run's folder)."""
        if self.block is None:
            return ()
        declared = self.block.cls.manifest.writes
        return tuple(sk for bk, sk in self.writes.items() if declared.get(bk) is Artifact)


@dataclass(eq=False)
class Plan:
    name: str
    version: str
    content_hash: str
    definition: dict[str, Any]
    params: dict[str, Any]
    nodes: list[Node]
    roots: list[int]
    outputs: list[str]
    #: key -> declared type, for every key the plan can produce (initial keys included)
    key_types: dict[str, str]
    #: keys a document must bring (``path``, or a subflow's inputs)
    initial: tuple[str, ...]
    #: the flow params this flow and its subflows declare
    declared_params: frozenset[str] = frozenset()

    def node(self, step_id: str) -> Node:
        return next(n for n in self.nodes if n.id == step_id)


def switch_key(node_idx: int) -> str:
    return f"__switch_{node_idx}"


def resolve_params(raw: dict[str, Any], flow_params: dict[str, Any]) -> dict[str, Any]:
    """Replace ``"${params.NAME}"`` values (at any depth) with the run's flow params."""

    def sub(value: Any) -> Any:
        if isinstance(value, str):
            m = _PARAM_REF.match(value)
            if m:
                if m.group(1) not in flow_params:
                    raise KeyError(m.group(1))
                return flow_params[m.group(1)]
            return value
        if isinstance(value, dict):
            return {k: sub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [sub(v) for v in value]
        return value

    return sub(raw)  # type: ignore[no-any-return]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the known name closest to ``name``, else ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _type_text(tp: Any) -> str:
    """A param's annotation as a reader would write it: ``int``, ``str | None``, ``'fp32' | 'bf16'``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _type_text(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_text(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if tp is type(None):
        return "None"
    if args:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(_type_text(a) for a in args)}]"
    return getattr(tp, "__name__", None) or repr(tp).replace("typing.", "")


class _Builder:
    def __init__(self, registry: Registry, params: dict[str, Any], base_dir: Path,
                 stack: tuple[Path, ...], subflow_dirs: tuple[Path, ...]) -> None:
        self.registry = registry
        self.params = params
        self.base_dir = base_dir
        self.stack = stack
        self.subflow_dirs = subflow_dirs
        self.nodes: list[Node] = []
        self.issues: list[FlowIssue] = []
        self.after: dict[int, list[str]] = {}
        self.writer_types: dict[str, Any] = {}
        self.reader_types: list[tuple[Node, str, Any]] = []
        self.groups: dict[str, list[int]] = {}  # fork id -> last node of each branch
        self.declared: set[str] = set()  # flow params the subflows declare
        #: root causes (reported first): (index in ``first``, node, what it would write, if known)
        self.first: list[FlowIssue] = []
        self.unknown: list[tuple[int, Node, frozenset[str] | None]] = []
        self.hidden: dict[int, int] = {}  # unknown block's node idx -> issues left out
        self.later: list[FlowIssue] = []  # perhaps consequences of an unknown block

    def issue(self, message: str, step: str | None = None, key: str | None = None) -> None:
        self.issues.append(FlowIssue(message, step, key))

    def missing(self, message: str, step: str | None, key: str) -> None:
        """An issue about ``key``, which no step writes: left out when an unknown block would
        have written it, reported last when an unknown block (no suggestion) might have."""
        for _, node, writes in self.unknown:
            if writes is not None and key in writes:
                self.hidden[node.idx] = self.hidden.get(node.idx, 0) + 1
                return
        guessless = [n.id for _, n, w in self.unknown if w is None]
        if guessless:
            steps = ", ".join(f"'{s}'" for s in guessless)
            self.later.append(FlowIssue(f"{message} (perhaps because step {steps} names an "
                                        "unknown block)", step, key))
        else:
            self.issue(message, step, key)

    def all_issues(self) -> list[FlowIssue]:
        """Root causes first (with how many issues that follow from each were left out),
        then every independent issue, then the ones that perhaps follow from a root cause."""
        first = list(self.first)
        for i, node, _ in self.unknown:
            n = self.hidden.get(node.idx, 0)
            if n:
                f = first[i]
                first[i] = FlowIssue(f"{f.message}; {n} issue{'s' if n > 1 else ''} that follow "
                                     "from it are not shown", f.step, f.key)
        return first + self.issues + self.later

    def new(self, step: dict[str, Any], kind: str, guards: tuple[tuple[int, str], ...]) -> Node:
        node = Node(idx=len(self.nodes), id=step["id"], kind=kind, guards=guards)
        if any(n.id == node.id for n in self.nodes) or node.id in self.groups:
            self.issue("duplicate step id", node.id)
        self.nodes.append(node)
        self.after[node.idx] = list(step.get("after", []))
        if "when" in step:
            node.when = self.expression(step["when"], node.id, "when")
        return node

    def expression(self, text: str, step_id: str, key: str) -> Expression | None:
        try:
            return Expression(text)
        except ExpressionError as exc:
            self.issue(str(exc), step_id, key)
            return None

    def add_steps(self, steps: Iterable[dict[str, Any]], guards: tuple[tuple[int, str], ...] = (),
                  chain: bool = False) -> list[int]:
        """Add steps; with ``chain`` each runs after the previous one (a fork branch)."""
        added: list[int] = []
        for step in steps:
            first = len(self.nodes)
            last = self.add_step(step, guards)
            if chain and added and last is not None:
                for idx in range(first, len(self.nodes)):
                    self.nodes[idx].deps.add(added[-1])
            if last is not None:
                added.append(last)
        return added

    def add_step(self, step: dict[str, Any], guards: tuple[tuple[int, str], ...]) -> int | None:
        kind = step_kind(step)
        if kind == "fork":
            lasts = [b[-1] for b in (self.add_steps(br, guards, chain=True) for br in step["fork"]) if b]
            node = self.new(step, "join", guards)
            node.deps.update(lasts)
            return node.idx
        node = self.new(step, kind, guards)
        if kind in ("block", "map"):
            self.block_step(node, step)
        elif kind == "expr":
            node.expr = self.expression(step["expr"], node.id, "expr")
            node.output = step["output"]
            node.writes = {step["output"]: step["output"]}
            self.writer_types.setdefault(step["output"], Any)
        elif kind == "switch":
            node.expr = self.expression(step["switch"], node.id, "switch")
            node.cases = tuple(step["cases"])
            node.has_default = "default" in step
            key = switch_key(node.idx)
            node.writes = {key: key}
            for case, case_steps in step["cases"].items():
                self.add_steps(case_steps, (*guards, (node.idx, case)))
            if node.has_default:
                self.add_steps(step["default"], (*guards, (node.idx, "")))
        elif kind == "join":
            self.after[node.idx] += step["join"]
        elif kind == "subflow":
            self.subflow_step(node, step)
        return node.idx

    def block_step(self, node: Node, step: dict[str, Any]) -> None:
        info = self.registry.blocks.get(step["block"])
        if info is None:
            self.unknown_block(node, step)
            return
        node.block = info
        manifest = info.cls.manifest
        node.retry = manifest.retry.merged(step.get("retry"))
        node.timeout = step.get("timeout", manifest.timeout)
        if node.timeout is not None and manifest.runtime == "inline":
            self.issue(f"block '{info.name}' runs inline, in the engine's loop, where it cannot be "
                       "interrupted: a timeout needs a thread or process block", node.id, "timeout")
        inputs, outputs = step.get("inputs", {}), step.get("outputs", {})
        for key in inputs:
            if key not in manifest.reads:
                self.issue(f"inputs renames '{key}', which block '{info.name}' does not read",
                           node.id, key)
        for key in outputs:
            if key not in manifest.writes:
                self.issue(f"outputs renames '{key}', which block '{info.name}' does not write",
                           node.id, key)
        node.reads = {k: inputs.get(k, k) for k in manifest.reads}
        node.writes = {k: outputs.get(k, k) for k in manifest.writes}
        node.block_writes = frozenset(manifest.writes)
        if node.kind == "map":
            node.map_over, node.map_as = step["map"], step.get("as", "item")
            if node.map_as not in manifest.reads:
                self.issue(f"map binds items to '{node.map_as}', which block '{info.name}' "
                           f"does not read (it reads {sorted(manifest.reads)})", node.id, "as")
            node.needs = (node.map_over, *(v for k, v in node.reads.items() if k != node.map_as))
            self.reader_types.append((node, node.map_over, f"list[{type_name(manifest.reads.get(node.map_as, Any))}]"))
            for k, v in node.writes.items():
                self.writer_types.setdefault(v, f"list[{type_name(manifest.writes[k])}]")
        else:
            node.needs = tuple(node.reads.values())
            for k, v in node.writes.items():
                self.writer_types.setdefault(v, manifest.writes[k])
        for k, v in node.reads.items():
            if k != node.map_as or node.kind != "map":
                self.reader_types.append((node, v, manifest.reads[k]))
        node.params = self.block_params(node, info.cls, step.get("params", {}))

    def unknown_block(self, node: Node, step: dict[str, Any]) -> None:
        """Report an unknown block first, with the closest installed name; what the suggested
        block would write tells which later issues follow from this one."""
        name = step["block"]
        close = difflib.get_close_matches(name, list(self.registry.blocks), n=1, cutoff=0.6)
        writes: frozenset[str] | None = None
        if close:
            message = (f"unknown block '{name}'; did you mean '{close[0]}'? "
                       "(`docpipe blocks` lists the installed ones)")
            renames = step.get("outputs", {})
            writes = frozenset(renames.get(k, k)
                               for k in self.registry.blocks[close[0]].cls.manifest.writes)
        else:
            known = ", ".join(sorted(self.registry.blocks)) or "none installed"
            message = f"unknown block '{name}' (known: {known})"
        self.first.append(FlowIssue(message, node.id, "block"))
        self.unknown.append((len(self.first) - 1, node, writes))

    def block_params(self, node: Node, cls: type[Block], raw: dict[str, Any]) -> BaseModel | None:
        try:
            resolved = resolve_params(raw, self.params)
        except KeyError as exc:
            self.issue(f"param refers to flow param '{exc.args[0]}', which the flow does not "
                       "define (add it to the flow's params)", node.id, exc.args[0])
            return None
        block, fields = cls.manifest.name, cls.Params.model_fields
        unknown = set()
        if cls.Params.model_config.get("extra") != "allow":
            names = set(fields) | {f.alias for f in fields.values() if f.alias}
            for key in raw:
                if key not in names:
                    unknown.add(key)
                    listed = ", ".join(sorted(fields)) or "none"
                    self.issue(f"block '{block}' has no param '{key}'{did_you_mean(key, fields)} "
                               f"(its params: {listed})", node.id, key)
        try:
            model = cls.Params.model_validate(resolved)
        except ValidationError as exc:
            for err in exc.errors():
                loc = err["loc"]
                if err["type"] == "extra_forbidden" and loc and loc[0] in unknown:
                    continue  # reported above, with a suggestion
                self.issue(self.param_problem(cls, raw, err), node.id,
                           ".".join(str(p) for p in loc) or None)
            return None
        return None if unknown else model

    @staticmethod
    def param_problem(cls: type[Block], raw: dict[str, Any], err: Any) -> str:
        """What is wrong with one step param: the value, and the flow param it came from."""
        loc, block = err["loc"], cls.manifest.name
        name = loc[0] if loc and isinstance(loc[0], str) else ""
        field_info = cls.Params.model_fields.get(name)
        expected = (f"; expected {_type_text(field_info.annotation)}"
                    if field_info and err["type"] != "value_error" else "")
        msg = str(err["msg"]).removeprefix("Value error, ")
        ref = _PARAM_REF.match(raw[name]) if isinstance(raw.get(name), str) else None
        value = err.get("input")
        if ref:
            return (f"flow param params.{ref.group(1)} = {value!r} does not fit param '{name}' "
                    f"of block '{block}': {msg}{expected}")
        shown = "" if err["type"] == "missing" else f" (got {value!r}{expected})"
        return f"bad param for block '{block}': {msg}{shown}"

    def subflow_step(self, node: Node, step: dict[str, Any]) -> None:
        path = (self.base_dir / step["subflow"]).resolve()
        if path in self.stack:
            self.issue(f"subflow {path} includes itself", node.id, "subflow")
            return
        if not any(path.is_relative_to(d) for d in self.subflow_dirs):
            self.issue(f"subflow {step['subflow']!r} is outside the flow's folder (allow more "
                       "folders with DOCPIPE_SUBFLOW_DIRS)", node.id, "subflow")
            return
        try:
            sub = build_plan(load_definition(path, foreign=True), self.registry,
                             base_dir=path.parent, stack=(*self.stack, path), params=self.params,
                             subflow_dirs=self.subflow_dirs)
        except FlowError as exc:
            for i in exc.issues:
                self.issue(f"in subflow {step['subflow']}: {i}", node.id, i.key)
            return
        node.subplan = sub
        self.declared |= sub.declared_params
        inputs, outputs = step.get("inputs", {}), step.get("outputs", {})
        node.reads = {k: inputs.get(k, k) for k in sub.initial}
        node.needs = tuple(node.reads.values())
        for k in sub.initial:
            self.reader_types.append((node, node.reads[k], sub.key_types.get(k, Any)))
        node.writes = {k: outputs.get(k, k) for k in sub.outputs}
        for k, v in node.writes.items():
            self.writer_types.setdefault(v, sub.key_types.get(k, Any))


def _exclusive(a: Node, b: Node) -> bool:
    """Whether two nodes sit in different cases of the same switch (never both run)."""
    ga = dict(a.guards)
    return any(s in ga and ga[s] != case for s, case in b.guards)


def _find_cycle(nodes: list[Node], left: set[int]) -> list[str]:
    start = min(left)
    seen: list[int] = []
    cur = start
    while cur not in seen:
        seen.append(cur)
        cur = next(d for d in sorted(nodes[cur].deps) if d in left)
    cycle = seen[seen.index(cur):]
    return [nodes[i].id for i in reversed(cycle)] + [nodes[cycle[-1]].id]


def build_plan(definition: dict[str, Any], registry: Registry, *,
               params: dict[str, Any] | None = None, base_dir: Path | str = ".",
               stack: tuple[Path, ...] = (), initial: Iterable[str] | None = None,
               subflow_dirs: tuple[Path, ...] | None = None) -> Plan:
    """Validate ``definition`` against the installed blocks and compile its graph.

    ``params`` override the flow's param defaults. A subflow's initial keys are
    inferred (what it reads that none of its steps write); a top-level flow
    starts from :data:`INITIAL_KEYS`. Raises :class:`FlowError` with every issue.
    """
    issues = schema_issues(definition)
    if issues:
        raise FlowError(issues, definition.get("name") if isinstance(definition, dict) else None)
    flow_params = {**definition.get("params", {}), **(params or {})}
    if subflow_dirs is None:  # subflows resolve only under the flow's folder and allowed ones
        extra = os.environ.get("DOCPIPE_SUBFLOW_DIRS", "")
        subflow_dirs = (Path(base_dir).resolve(),
                        *(Path(d).resolve() for d in extra.split(os.pathsep) if d))
    b = _Builder(registry, flow_params, Path(base_dir), stack, subflow_dirs)
    b.add_steps(definition["steps"])
    nodes = b.nodes

    writers: dict[str, list[Node]] = {}
    for n in nodes:
        for key in n.writes.values():
            for other in writers.get(key, []):
                if not _exclusive(n, other):
                    b.issue(f"key is also written by step '{other.id}' (two steps may write "
                            "one key only in different cases of a switch)", n.id, key)
            writers.setdefault(key, []).append(n)

    reads: dict[int, set[str]] = {n.idx: set(n.needs) for n in nodes}
    for n in nodes:
        for e in (n.when, n.expr):
            if e is not None:
                reads[n.idx] |= e.names
    produced = set(writers)
    if initial is None:
        initial = INITIAL_KEYS if stack == () else sorted(
            {k for ks in reads.values() for k in ks} - produced)
    initial = tuple(initial)
    for n in nodes:
        for key in sorted(reads[n.idx]):
            if key in initial:
                continue
            if key not in writers:
                b.missing(f"reads '{key}', which no step writes", n.id, key)
                continue
            n.deps.update(w.idx for w in writers[key] if w is not n)
        for s, _case in n.guards:
            n.deps.add(s)
        for target in b.after[n.idx]:
            found = [m.idx for m in nodes if m.id == target]
            if not found:
                b.issue(f"'after'/'join' names step '{target}', which does not exist", n.id)
            n.deps.update(found)
        n.deps.discard(n.idx)
    for node, key, read_type in b.reader_types:
        written = b.writer_types.get(key, INITIAL_KEYS.get(key, Any))
        if not types_compatible(written, read_type):
            b.issue(f"reads '{key}' as {type_name(read_type)}, but it is written as "
                    f"{type_name(written)}", node.id, key)

    # cycles (Kahn)
    indeg = {n.idx: len(n.deps) for n in nodes}
    for n in nodes:
        for d in n.deps:
            nodes[d].dependents.append(n.idx)
    queue = [i for i, d in indeg.items() if d == 0]
    while queue:
        i = queue.pop()
        for j in nodes[i].dependents:
            indeg[j] -= 1
            if indeg[j] == 0:
                queue.append(j)
    left = {i for i, d in indeg.items() if d > 0}
    if left:
        cycle = _find_cycle(nodes, left)
        b.issue("cycle: " + " -> ".join(cycle), cycle[0])

    key_types = {k: type_name(v) for k, v in {**INITIAL_KEYS, **b.writer_types}.items()}
    if "outputs" in definition:
        outputs = list(definition["outputs"])
        for key in outputs:
            if key not in produced and key not in initial:
                b.missing(f"flow output '{key}' is not written by any step", None, key)
    else:
        outputs = [k for k in writers if not k.startswith("__")
                   and not key_types.get(k, "").startswith(_COLLECTIONS)]
    declared = frozenset(definition.get("params", {})) | b.declared
    if not stack:  # a subflow gets its parent's params: only the top level checks them
        for key in params or {}:
            if key not in declared:
                listed = ", ".join(sorted(declared)) or "none"
                b.first.insert(0, FlowIssue(
                    f"the flow has no param '{key}'{did_you_mean(key, declared)} (its params: "
                    f"{listed}; a new one is declared in the flow's \"params\")", None, f"params.{key}"))
                b.unknown = [(i + 1, n, w) for i, n, w in b.unknown]
    issues = b.all_issues()
    if issues:
        raise FlowError(issues, definition["name"])
    return Plan(
        name=definition["name"],
        version=definition["version"],
        content_hash=content_hash(definition),
        definition=definition,
        params=flow_params,
        nodes=nodes,
        roots=[n.idx for n in nodes if not n.deps],
        outputs=outputs,
        key_types=key_types,
        initial=initial,
        declared_params=declared,
    )


def plan_file(path: str | Path, registry: Registry, params: dict[str, Any] | None = None) -> Plan:
    p = Path(path)
    return build_plan(load_definition(p), registry, params=params, base_dir=p.parent.resolve())
