"""The planner: a validated flow definition -> a graph of nodes the engine can drive.

The graph comes from what each step reads and writes (plus explicit ``after``,
``fork`` and ``join`` ordering and the guards of ``switch`` cases); the order
steps are listed in does not matter. Every problem is collected and reported
together, each naming the step and the key: an unknown block, params that do
not fit the block's ``Params`` model, a read that no step writes, two steps
writing the same key (allowed only for the exclusive cases of one switch),
a reader whose type does not match the writer's, cycles.
"""

from __future__ import annotations

import os
import re
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

    def issue(self, message: str, step: str | None = None, key: str | None = None) -> None:
        self.issues.append(FlowIssue(message, step, key))

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
            known = ", ".join(sorted(self.registry.blocks)) or "none installed"
            self.issue(f"unknown block '{step['block']}' (known: {known})", node.id, "block")
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

    def block_params(self, node: Node, cls: type[Block], raw: dict[str, Any]) -> BaseModel | None:
        try:
            resolved = resolve_params(raw, self.params)
        except KeyError as exc:
            self.issue(f"param refers to flow param '{exc.args[0]}', which the flow does not "
                       "define (add it to the flow's params)", node.id, exc.args[0])
            return None
        try:
            return cls.Params.model_validate(resolved)
        except ValidationError as exc:
            for err in exc.errors():
                key = ".".join(str(p) for p in err["loc"]) or None
                self.issue(f"bad param for block '{cls.manifest.name}': {err['msg']}", node.id, key)
            return None

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
                b.issue(f"reads '{key}', which no step writes", n.id, key)
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
                b.issue(f"flow output '{key}' is not written by any step", None, key)
    else:
        outputs = [k for k in writers if not k.startswith("__")
                   and not key_types.get(k, "").startswith(_COLLECTIONS)]
    if b.issues:
        raise FlowError(b.issues, definition["name"])
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
    )


def plan_file(path: str | Path, registry: Registry, params: dict[str, Any] | None = None) -> Plan:
    p = Path(path)
    return build_plan(load_definition(p), registry, params=params, base_dir=p.parent.resolve())
