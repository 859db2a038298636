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

One walker (``_Builder``) goes over the step tree, switch cases, fork branches and
subflows included, and everything else reads what it found: :func:`build_plan`
gives the engine's :class:`Plan` of a flow that validates; :func:`flow_graph` gives
the :class:`FlowGraph` the UI draws, for any flow (its steps as written, the edges
with the keys that flow along them, the cases, branches and nested subflows, and the
issues :func:`build_plan` would raise).
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
from docpipe.blocks import Artifact, Block, Manifest, Retry, type_name, types_compatible
from docpipe.errors import ExpressionError, FlowError, FlowIssue
from docpipe.expr import Expression
from docpipe.flow import content_hash, load_definition, schema_issues, step_kind
from docpipe.plugins import BlockInfo, Registry
from docpipe.provenance import StaticProvenance

#: keys every document starts with: its file, and its run's folder for artifacts
INITIAL_KEYS: dict[str, Any] = {"path": str, WORK_DIR_KEY: str}
_PARAM_REF = re.compile(r"^\$\{params\.([A-Za-z_][A-Za-z0-9_]*)\}$")
_COLLECTIONS = ("list", "dict", "tuple", "set", "frozenset")


@dataclass(eq=False)
class Node:
    """One schedulable step of a plan."""

    idx: int
    id: str
    kind: str  # block | map | expr | switch | join | subflow | review
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
    #: what a review step asks (``None`` for every other kind)
    review: ReviewSpec | None = None
    retry: Retry = Retry()
    timeout: float | None = None
    #: worker recycling limits (process blocks): tasks per worker, resident MiB after a call
    max_tasks_per_worker: int | None = None
    max_worker_rss_mb: int | None = None
    #: workers of the step's pool (``None``: the engine's ``workers`` or the block's hint)
    workers: int | None = None
    #: the step's cache policy (``"cache"``): ``None`` follows the flow's (docs/provenance.md)
    cache: bool | None = None
    # set by a recording engine when a batch of the plan starts (docs/provenance.md), kept on
    # the node so that they live as long as the plan: what produces its tasks but their inputs
    # and the text of it its task records carry; whether its tasks get a cache key; whether
    # they look it up (the policy is on)
    provenance: StaticProvenance | None = None
    recorded_provenance: str | None = None
    keyed: bool = False
    cached: bool = False
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


@dataclass(frozen=True)
class ReviewSpec:
    """What a review step asks a person (see docs/review.md).

    ``keys`` are what the answer writes: the reviewed keys of ``choose`` and ``edit`` (an
    earlier step wrote them; the answer replaces them), or the new true/false key of
    ``approve``. Each key also gets ``<key>_reviewed_by`` and ``<key>_reviewed_at``.
    """

    kind: str
    keys: tuple[str, ...]
    choices: tuple[str, ...] = ()
    choices_from: str | None = None
    prompt: str | None = None
    show: tuple[str, ...] = ()

    @property
    def reviewed(self) -> tuple[str, ...]:
        """The keys an earlier step wrote that the answer replaces (none for ``approve``)."""
        return () if self.kind == "approve" else self.keys

    def choices_for(self, state: dict[str, Any]) -> list[str]:
        """The choices offered: the literal ones, then those the ``choices_from`` key holds
        (strings, or the labels of ``{label, score}`` dicts), each once."""
        found = list(self.choices)
        for item in state.get(self.choices_from) or () if self.choices_from else ():
            label = item.get("label") if isinstance(item, dict) else item
            if isinstance(label, str) and label not in found:
                found.append(label)
        return found

    def proposal(self, state: dict[str, Any]) -> dict[str, Any]:
        """What the model proposed: the current values of the keys, of ``<key>_score`` where
        a step wrote it, of ``choices_from`` (the top-k) and of the keys shown."""
        shown = [*self.keys, *(f"{k}_score" for k in self.keys), *filter(None, [self.choices_from]), *self.show]
        return {k: state[k] for k in dict.fromkeys(shown) if k in state}

    def written(self) -> dict[str, str]:
        """The state keys the answer writes: each key, its reviewer and its time."""
        return {w: w for k in self.keys for w in (k, f"{k}_reviewed_by", f"{k}_reviewed_at")}


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
    #: the flow's cache policy (``"cache": true``, or ``docpipe run --reuse``): block steps
    #: reuse the outputs of equal earlier tasks unless a step says ``"cache": false``
    cache: bool = False

    def node(self, step_id: str) -> Node:
        return next(n for n in self.nodes if n.id == step_id)


@dataclass(frozen=True)
class GraphEdge:
    """A dependency between two steps of a :class:`FlowGraph`: ``target`` runs after ``source``."""

    source: int
    target: int
    #: the state keys ``source`` writes and ``target`` reads (none: ordering only)
    keys: tuple[str, ...] = ()
    #: the case of switch ``source`` that guards ``target`` (``""``: the default), else ``None``
    case: str | None = None


@dataclass(eq=False)
class GraphNode:
    """One step of a :class:`FlowGraph`, as the flow names it.

    ``kind`` is the step's kind as written (a fork is a ``fork`` here; the engine runs it as
    the join of its branches). ``runtime`` is ``None`` for a block that is not installed.
    ``reads``/``writes`` map the block's keys (a subflow's inputs and outputs) to the state
    keys they were renamed to; ``keys_read`` is every state key the step waits for, the names
    its expressions use included. ``cases`` (switch; ``""`` is the default), ``branches``
    (fork) and ``subgraph`` (subflow) hold the nested structure as node indices and graphs.
    """

    idx: int
    id: str
    kind: str
    block: str | None = None
    runtime: str | None = None
    reads: dict[str, str] = field(default_factory=dict)
    writes: dict[str, str] = field(default_factory=dict)
    keys_read: tuple[str, ...] = ()
    #: (switch node idx, case) pairs that must all hold for the step to run
    guards: tuple[tuple[int, str], ...] = ()
    when: str | None = None
    #: an expr step's expression, or a switch's
    expr: str | None = None
    output: str | None = None
    map_over: str | None = None
    map_as: str | None = None
    subflow: str | None = None
    joins: tuple[str, ...] = ()
    description: str | None = None
    cases: dict[str, tuple[int, ...]] = field(default_factory=dict)
    branches: tuple[tuple[int, ...], ...] = ()
    subgraph: FlowGraph | None = None
    #: a review step's question (kind, keys, choices, prompt, show)
    review: ReviewSpec | None = None
    issues: tuple[FlowIssue, ...] = ()


@dataclass(eq=False)
class FlowGraph:
    """What the planner knows of a flow, valid or not: its steps, the dependencies between them
    and every issue (what :func:`build_plan` would raise; a flow that breaks the JSON Schema
    reports only that, and its graph is the best the walker could make of it)."""

    name: str | None
    version: str | None
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    issues: list[FlowIssue]

    @property
    def valid(self) -> bool:
        return not self.issues

    def node(self, step_id: str) -> GraphNode:
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


# The walker reads a step through these: a flow that breaks the JSON Schema is still walked
# (the UI draws it with its issues), so no field may be trusted to have its type.
def _text(step: dict[str, Any], key: str) -> str | None:
    value = step.get(key)
    return value if isinstance(value, str) else None


def _mapping(step: dict[str, Any], key: str) -> dict[str, Any]:
    value = step.get(key)
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _renames(step: dict[str, Any], key: str) -> dict[str, str]:
    return {k: v for k, v in _mapping(step, key).items() if isinstance(v, str)}


def _names(values: Any) -> list[str]:
    return [v for v in _list(values) if isinstance(v, str)]


class _Builder:
    """The one walker over a flow's step tree: it makes the engine's nodes, their dependencies
    and every issue, and keeps what a :class:`FlowGraph` shows (the steps as written, the
    cases and branches they sit in, the walkers of subflows)."""

    def __init__(self, definition: dict[str, Any], registry: Registry, params: dict[str, Any],
                 base_dir: Path, stack: tuple[Path, ...], subflow_dirs: tuple[Path, ...],
                 schema_ok: bool = True) -> None:
        self.definition = definition
        #: ``False``: the flow breaks the JSON Schema, and only its structure is walked (a step's
        #: retry, timeout and params are not read: nothing may be assumed of them)
        self.schema_ok = schema_ok
        self.registry = registry
        self.params = params
        self.base_dir = base_dir
        self.stack = stack
        self.subflow_dirs = subflow_dirs
        self.nodes: list[Node] = []
        self.steps: list[dict[str, Any]] = []  # node idx -> its step as the flow writes it
        self.cases: dict[int, dict[str, tuple[int, ...]]] = {}  # switch -> case -> its steps
        self.branches: dict[int, tuple[tuple[int, ...], ...]] = {}  # fork -> its branches' steps
        self.subflows: dict[int, _Builder] = {}
        self.issues: list[FlowIssue] = []
        self.after: dict[int, list[str]] = {}
        self.reads: dict[int, set[str]] = {}  # node idx -> every state key it waits for
        self.writer_types: dict[str, Any] = {}
        self.reader_types: list[tuple[Node, str, Any]] = []
        self.declared: set[str] = set()  # flow params the subflows declare
        # set by wire(), once the walk is done
        self.initial: tuple[str, ...] = ()
        self.key_types: dict[str, str] = {}
        self.outputs: list[str] = []
        self.declared_params: frozenset[str] = frozenset()
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
        idx = len(self.nodes)
        node = Node(idx=idx, id=str(step.get("id") or f"step {idx + 1}"), kind=kind, guards=guards)
        if any(n.id == node.id for n in self.nodes):
            self.issue("duplicate step id", node.id)
        self.nodes.append(node)
        self.steps.append(step)
        self.after[idx] = _names(step.get("after"))
        if "when" in step:
            node.when = self.expression(step["when"], node.id, "when")
        if isinstance(step.get("cache"), bool):
            node.cache = step["cache"]
        return node

    def expression(self, text: Any, step_id: str, key: str) -> Expression | None:
        if not isinstance(text, str):
            return None  # the schema says so
        try:
            return Expression(text)
        except ExpressionError as exc:
            self.issue(str(exc), step_id, key)
            return None

    def add_steps(self, steps: Any, guards: tuple[tuple[int, str], ...] = (),
                  chain: bool = False) -> list[int]:
        """Add steps, returning each one's node; with ``chain`` each runs after the previous
        one (a fork branch)."""
        added: list[int] = []
        for step in _list(steps):
            if not isinstance(step, dict):
                continue  # the schema says so
            first = len(self.nodes)
            last = self.add_step(step, guards)
            if chain and added:
                for idx in range(first, len(self.nodes)):
                    self.nodes[idx].deps.add(added[-1])
            added.append(last)
        return added

    def add_step(self, step: dict[str, Any], guards: tuple[tuple[int, str], ...]) -> int:
        kind = step_kind(step)
        if kind == "fork":  # the branches first; the fork's node is where they join
            branches = tuple(tuple(self.add_steps(br, guards, chain=True)) for br in _list(step["fork"]))
            node = self.new(step, "join", guards)
            node.deps.update(b[-1] for b in branches if b)
            self.branches[node.idx] = branches
            return node.idx
        node = self.new(step, kind, guards)
        if kind in ("block", "map"):
            self.block_step(node, step)
        elif kind == "expr":
            self.expr_step(node, step)
        elif kind == "switch":
            self.switch_step(node, step, guards)
        elif kind == "join":
            self.after[node.idx] += _names(step["join"])
        elif kind == "subflow":
            self.subflow_step(node, step)
        elif kind == "review":
            self.review_step(node, step)
        return node.idx

    def review_step(self, node: Node, step: dict[str, Any]) -> None:
        """A review reads what it shows (the reviewed keys, the choices, ``show``) and writes
        its keys with their reviewer and time; ``wire`` checks it runs after the step whose
        keys it reviews. A subflow's run cannot wait: only a top-level flow reviews."""
        spec = _mapping(step, "review")
        kind = _text(spec, "kind") or "choose"
        keys = _names(spec.get("keys")) or _names([spec.get("key")])
        review = ReviewSpec(kind, tuple(keys), tuple(_names(spec.get("choices"))),
                            spec.get("choices_from") if isinstance(spec.get("choices_from"), str) else None,
                            spec.get("prompt") if isinstance(spec.get("prompt"), str) else None,
                            tuple(_names(spec.get("show"))))
        node.review = review
        if self.stack:
            self.issue("a review step cannot be in a subflow (only a top-level flow's run can wait "
                       "for a person)", node.id, "review")
        reads = [*review.reviewed, *filter(None, [review.choices_from]), *review.show]
        node.reads = {k: k for k in dict.fromkeys(reads)}
        node.needs = tuple(node.reads)
        node.writes = review.written()
        for k in review.keys:
            self.writer_types.setdefault(f"{k}_reviewed_by", str)
            self.writer_types.setdefault(f"{k}_reviewed_at", float)
        for k in review.keys if kind == "approve" else ():
            self.writer_types.setdefault(k, bool)

    def expr_step(self, node: Node, step: dict[str, Any]) -> None:
        node.expr = self.expression(step["expr"], node.id, "expr")
        node.output = _text(step, "output")
        if node.output is not None:
            node.writes = {node.output: node.output}
            self.writer_types.setdefault(node.output, Any)

    def switch_step(self, node: Node, step: dict[str, Any], guards: tuple[tuple[int, str], ...]) -> None:
        node.expr = self.expression(step["switch"], node.id, "switch")
        cases = _mapping(step, "cases")
        node.cases = tuple(cases)
        node.has_default = "default" in step
        key = switch_key(node.idx)
        node.writes = {key: key}
        chosen = {case: tuple(self.add_steps(steps, (*guards, (node.idx, case))))
                  for case, steps in cases.items()}
        if node.has_default:
            chosen[""] = tuple(self.add_steps(step["default"], (*guards, (node.idx, ""))))
        self.cases[node.idx] = chosen

    def block_step(self, node: Node, step: dict[str, Any]) -> None:
        info = self.registry.blocks.get(step["block"]) if isinstance(step.get("block"), str) else None
        if info is None:
            self.unknown_block(node, step)
            return
        node.block = info
        manifest = info.cls.manifest
        if self.schema_ok:
            self.retry_and_timeout(node, step, manifest)
        inputs, outputs = _renames(step, "inputs"), _renames(step, "outputs")
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
            self.map_step(node, step, info)
        else:
            node.needs = tuple(node.reads.values())
            for k, v in node.writes.items():
                self.writer_types.setdefault(v, manifest.writes[k])
        for k, v in node.reads.items():
            if k != node.map_as or node.kind != "map":
                self.reader_types.append((node, v, manifest.reads[k]))
        if self.schema_ok:
            node.params = self.block_params(node, info.cls, _mapping(step, "params"))

    def retry_and_timeout(self, node: Node, step: dict[str, Any], manifest: Manifest) -> None:
        """The block's retry policy, timeout and worker recycling limits with the step's on top;
        an inline block cannot time out, only a process block's workers can be recycled."""
        node.retry = manifest.retry.merged(step.get("retry"))
        node.timeout = step.get("timeout", manifest.timeout)
        node.workers = step.get("workers")
        if node.workers is not None and manifest.runtime == "inline":
            self.issue(f"block '{manifest.name}' runs inline, in the engine's loop: workers needs a "
                       "thread or process block", node.id, "workers")
        if node.timeout is not None and manifest.runtime == "inline":
            self.issue(f"block '{manifest.name}' runs inline, in the engine's loop, where it cannot be "
                       "interrupted: a timeout needs a thread or process block", node.id, "timeout")
        for what in ("max_tasks_per_worker", "max_worker_rss_mb"):
            setattr(node, what, step.get(what, getattr(manifest, what)))
            if what in step and manifest.runtime != "process":
                self.issue(f"block '{manifest.name}' runs {manifest.runtime}, in the engine's own "
                           f"process: {what} needs a process block, whose workers can be replaced",
                           node.id, what)

    def map_step(self, node: Node, step: dict[str, Any], info: BlockInfo) -> None:
        manifest = info.cls.manifest
        node.map_over, node.map_as = _text(step, "map"), _text(step, "as") or "item"
        if node.map_as not in manifest.reads:
            self.issue(f"map binds items to '{node.map_as}', which block '{info.name}' "
                       f"does not read (it reads {sorted(manifest.reads)})", node.id, "as")
        rest = tuple(v for k, v in node.reads.items() if k != node.map_as)
        node.needs = rest if node.map_over is None else (node.map_over, *rest)
        if node.map_over is not None:
            item = type_name(manifest.reads.get(node.map_as, Any))
            self.reader_types.append((node, node.map_over, f"list[{item}]"))
        for k, v in node.writes.items():
            self.writer_types.setdefault(v, f"list[{type_name(manifest.writes[k])}]")

    def unknown_block(self, node: Node, step: dict[str, Any]) -> None:
        """Report an unknown block first, with the closest installed name; what the suggested
        block would write tells which later issues follow from this one."""
        name = step.get("block")
        close = (difflib.get_close_matches(name, list(self.registry.blocks), n=1, cutoff=0.6)
                 if isinstance(name, str) else [])
        writes: frozenset[str] | None = None
        if close:
            message = (f"unknown block '{name}'; did you mean '{close[0]}'? "
                       "(`docpipe blocks` lists the installed ones)")
            renames = _renames(step, "outputs")
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
        ref = _text(step, "subflow")
        if ref is None:
            return  # the schema says so
        try:
            path = (self.base_dir / ref).resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte
            self.issue(f"subflow {ref!r} is not a usable path: {exc}", node.id, "subflow")
            return
        if path in self.stack:
            self.issue(f"subflow {path} includes itself", node.id, "subflow")
            return
        if not any(path.is_relative_to(d) for d in self.subflow_dirs):
            self.issue(f"subflow {ref!r} is outside the flow's folder (allow more "
                       "folders with DOCPIPE_SUBFLOW_DIRS)", node.id, "subflow")
            return
        try:
            definition = load_definition(path, foreign=True)
        except FlowError as exc:
            for i in exc.issues:
                self.issue(f"in subflow {ref}: {i}", node.id, i.key)
            return
        sub = _walk(definition, self.registry, base_dir=path.parent, stack=(*self.stack, path),
                    params=self.params, subflow_dirs=self.subflow_dirs)
        self.subflows[node.idx] = sub
        issues = sub.all_issues()
        for i in issues:
            self.issue(f"in subflow {ref}: {i}", node.id, i.key)
        if issues:
            return
        node.subplan = sub.plan(definition)
        self.declared |= sub.declared_params
        inputs, outputs = _renames(step, "inputs"), _renames(step, "outputs")
        node.reads = {k: inputs.get(k, k) for k in node.subplan.initial}
        node.needs = tuple(node.reads.values())
        for k in node.subplan.initial:
            self.reader_types.append((node, node.reads[k], node.subplan.key_types.get(k, Any)))
        node.writes = {k: outputs.get(k, k) for k in node.subplan.outputs}
        for k, v in node.writes.items():
            self.writer_types.setdefault(v, node.subplan.key_types.get(k, Any))

    def wire(self, definition: dict[str, Any], given: dict[str, Any] | None,
             initial: Iterable[str] | None) -> None:
        """After the walk: dependencies from writers to readers, guards and explicit ordering;
        the checks that need the whole flow (two writers, types, cycles, outputs, params)."""
        writers = self.check_writers()
        for n in self.nodes:
            self.reads[n.idx] = set(n.needs).union(*(e.names for e in (n.when, n.expr) if e is not None))
        if initial is None:
            initial = INITIAL_KEYS if self.stack == () else sorted(
                set().union(*self.reads.values()) - set(writers))
        self.initial = tuple(initial)
        for n in self.nodes:
            self.depend(n, writers)
        self.after_reviews()
        for node, key, read_type in self.reader_types:
            written = self.writer_types.get(key, INITIAL_KEYS.get(key, Any))
            if not types_compatible(written, read_type):
                self.issue(f"reads '{key}' as {type_name(read_type)}, but it is written as "
                           f"{type_name(written)}", node.id, key)
        self.check_cycles()
        self.key_types = {k: type_name(v) for k, v in {**INITIAL_KEYS, **self.writer_types}.items()}
        self.outputs = self.flow_outputs(definition, writers)
        self.declared_params = frozenset(_mapping(definition, "params")) | self.declared
        if not self.stack:  # a subflow gets its parent's params: only the top level checks them
            self.check_params(given or {})

    def check_writers(self) -> dict[str, list[Node]]:
        """Who writes each key; two steps may write one only in different cases of a switch."""
        writers: dict[str, list[Node]] = {}
        for n in self.nodes:
            for key in n.writes.values():
                for other in writers.get(key, []):
                    if _reviews(n, key) and _reviews(other, key):
                        self.issue(f"key is also reviewed by step '{other.id}' (one review step per key)",
                                   n.id, key)
                    elif not (_exclusive(n, other) or _reviews(n, key) or _reviews(other, key)):
                        self.issue(f"key is also written by step '{other.id}' (two steps may write "
                                   "one key only in different cases of a switch, or a review step "
                                   "after the step it reviews)", n.id, key)
                writers.setdefault(key, []).append(n)
        for n in self.nodes:
            for key in n.review.reviewed if n.review else ():
                if not any(w is not n for w in writers.get(key, ())):
                    self.issue(f"reviews '{key}', which no earlier step writes (a review step checks "
                               "what a step before it wrote)", n.id, key)
        return writers

    def depend(self, n: Node, writers: dict[str, list[Node]]) -> None:
        """``n``'s dependencies: the writers of what it reads, its switches, what it names."""
        for key in sorted(self.reads[n.idx]):
            if key in self.initial:
                continue
            if key not in writers:
                self.missing(f"reads '{key}', which no step writes", n.id, key)
                continue
            n.deps.update(w.idx for w in writers[key] if w is not n and not _reviews(w, key))
        for s, _case in n.guards:
            n.deps.add(s)
        for target in self.after[n.idx]:
            found = [m.idx for m in self.nodes if m.id == target]
            if not found:
                self.issue(f"'after'/'join' names step '{target}', which does not exist", n.id)
            n.deps.update(found)
        n.deps.discard(n.idx)

    def after_reviews(self) -> None:
        """A reader of a reviewed key waits for the review (it reads the answer), unless the
        review waits for it: a step the review needs (the one that wrote the top-k it shows)
        reads the model's value."""
        for v in self.nodes:
            reviewed = set(v.review.reviewed) if v.review else set()
            if not reviewed:
                continue
            before = self.ancestors(v)
            for n in self.nodes:
                if n is not v and n.idx not in before and self.reads[n.idx] & reviewed:
                    n.deps.add(v.idx)

    def ancestors(self, node: Node) -> set[int]:
        """Every step ``node`` waits for, directly or not."""
        seen: set[int] = set()
        todo = list(node.deps)
        while todo:
            i = todo.pop()
            if i not in seen:
                seen.add(i)
                todo.extend(self.nodes[i].deps)
        return seen

    def check_cycles(self) -> None:
        """Fill in each node's dependents; report a cycle (Kahn's algorithm)."""
        nodes = self.nodes
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
            self.issue("cycle: " + " -> ".join(cycle), cycle[0])

    def flow_outputs(self, definition: dict[str, Any], writers: dict[str, list[Node]]) -> list[str]:
        """The flow's ``outputs``, else every key written that is neither internal nor a collection."""
        if "outputs" not in definition:
            return [k for k in writers if not k.startswith("__")
                    and not self.key_types.get(k, "").startswith(_COLLECTIONS)]
        outputs = _names(definition["outputs"])
        for key in outputs:
            if key not in writers and key not in self.initial:
                self.missing(f"flow output '{key}' is not written by any step", None, key)
        return outputs

    def check_params(self, given: dict[str, Any]) -> None:
        """A flow param given that neither the flow nor its subflows declare: a root cause."""
        declared = self.declared_params
        for key in given:
            if key not in declared:
                listed = ", ".join(sorted(declared)) or "none"
                self.first.insert(0, FlowIssue(
                    f"the flow has no param '{key}'{did_you_mean(key, declared)} (its params: "
                    f"{listed}; a new one is declared in the flow's \"params\")", None, f"params.{key}"))
                self.unknown = [(i + 1, n, w) for i, n, w in self.unknown]

    def plan(self, definition: dict[str, Any]) -> Plan:
        """The engine's view of a flow that validated."""
        return Plan(
            name=definition["name"],
            version=definition["version"],
            content_hash=content_hash(definition),
            definition=definition,
            params=self.params,
            nodes=self.nodes,
            roots=[n.idx for n in self.nodes if not n.deps],
            outputs=self.outputs,
            key_types=self.key_types,
            initial=self.initial,
            declared_params=self.declared_params,
            cache=definition.get("cache") is True,
        )

    def graph(self, definition: dict[str, Any], issues: list[FlowIssue]) -> FlowGraph:
        """The UI's view of the flow: every step as written, the edges with what flows along
        them, and ``issues`` (each also on the step it names)."""
        nodes = [self.graph_node(n, issues) for n in self.nodes]
        edges = []
        for n in self.nodes:
            cases = dict(n.guards)
            for d in sorted(n.deps):
                keys = tuple(sorted(set(nodes[d].writes.values()) & self.reads.get(n.idx, set())))
                edges.append(GraphEdge(d, n.idx, keys, cases.get(d)))
        name, version = definition.get("name"), definition.get("version")
        return FlowGraph(name if isinstance(name, str) else None,
                         version if isinstance(version, str) else None, nodes, edges, issues)

    def graph_node(self, n: Node, issues: list[FlowIssue]) -> GraphNode:
        step, kind = self.steps[n.idx], step_kind(self.steps[n.idx])
        sub = self.subflows.get(n.idx)
        return GraphNode(
            idx=n.idx, id=n.id, kind=kind,
            block=_shown(step.get("block")),
            runtime=None if n.block is None and kind in ("block", "map") else n.runtime,
            reads=dict(n.reads), writes={} if kind == "switch" else dict(n.writes),
            keys_read=tuple(sorted(self.reads.get(n.idx, ()))), guards=n.guards,
            when=None if "when" not in step else str(step["when"]),
            expr=_shown(step.get(kind)) if kind in ("expr", "switch") else None, output=n.output,
            map_over=_text(step, "map"), map_as=(_text(step, "as") or "item") if kind == "map" else None,
            subflow=_shown(step.get("subflow")),
            joins=tuple(_names(step.get("join"))), description=_text(step, "description"),
            cases=self.cases.get(n.idx, {}), branches=self.branches.get(n.idx, ()),
            subgraph=None if sub is None else sub.graph(sub.definition, sub.all_issues()),
            review=n.review,
            issues=tuple(i for i in issues if i.step == n.id),
        )


def _reviews(n: Node, key: str) -> bool:
    """Whether ``n`` is a review step that reviews ``key`` (replaces what an earlier step wrote)."""
    return n.review is not None and key in n.review.reviewed


def _shown(value: Any) -> str | None:
    return None if value is None else str(value)


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


def _walk(definition: dict[str, Any], registry: Registry, *, params: dict[str, Any] | None = None,
          base_dir: Path | str = ".", stack: tuple[Path, ...] = (), initial: Iterable[str] | None = None,
          subflow_dirs: tuple[Path, ...] | None = None, schema_ok: bool = True) -> _Builder:
    """Walk ``definition``'s steps once and wire them; the walker holds the nodes and issues."""
    flow_params = {**_mapping(definition, "params"), **(params or {})}
    if subflow_dirs is None:  # subflows resolve only under the flow's folder and allowed ones
        extra = os.environ.get("DOCPIPE_SUBFLOW_DIRS", "")
        subflow_dirs = (Path(base_dir).resolve(),
                        *(Path(d).resolve() for d in extra.split(os.pathsep) if d))
    b = _Builder(definition, registry, flow_params, Path(base_dir), stack, subflow_dirs, schema_ok)
    b.add_steps(definition.get("steps"))
    b.wire(definition, params if not stack else None, initial)
    return b


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
    b = _walk(definition, registry, params=params, base_dir=base_dir, stack=stack, initial=initial,
              subflow_dirs=subflow_dirs)
    issues = b.all_issues()
    if issues:
        raise FlowError(issues, definition["name"])
    return b.plan(definition)


def flow_graph(definition: dict[str, Any], registry: Registry, *, params: dict[str, Any] | None = None,
               base_dir: Path | str = ".") -> FlowGraph:
    """The graph of ``definition`` whether it validates or not (never raises for a bad flow):
    the same walk as :func:`build_plan`, and the issues it would raise (a flow that breaks the
    JSON Schema reports only that, as :func:`build_plan` does, and is walked as far as it goes)."""
    if not isinstance(definition, dict):
        definition = {}
    schema = schema_issues(definition)
    b = _walk(definition, registry, params=params, base_dir=base_dir, schema_ok=not schema)
    return b.graph(definition, schema or b.all_issues())


def plan_file(path: str | Path, registry: Registry, params: dict[str, Any] | None = None) -> Plan:
    p = Path(path)
    return build_plan(load_definition(p), registry, params=params, base_dir=p.parent.resolve())
