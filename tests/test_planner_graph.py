"""The planner's graph of a flow (docpipe.planner.flow_graph): the one walk over the step tree
that the engine's plan and the UI's drawing share, for flows that validate and flows that do not."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, TOYS

from docpipe.errors import FlowError
from docpipe.flow import schema_issues
from docpipe.planner import FlowGraph, GraphEdge, build_plan, flow_graph
from docpipe.plugins import Registry
from docpipe.server.data import step_reads

HELLO = str(ROOT / "examples" / "docpipe-hello" / "docpipe_hello" / "__init__.py")


def pairs(graph: FlowGraph) -> set[tuple[str, str]]:
    return {(graph.nodes[e.source].id, graph.nodes[e.target].id) for e in graph.edges}


def edge(graph: FlowGraph, source: str, target: str) -> GraphEdge:
    a, b = graph.node(source).idx, graph.node(target).idx
    return next(e for e in graph.edges if (e.source, e.target) == (a, b))


def ids(graph: FlowGraph, idxs: tuple[int, ...]) -> list[str]:
    return [graph.nodes[i].id for i in idxs]


def assert_is_the_plans(graph: FlowGraph, definition: dict[str, Any], registry: Registry, **kw: Any) -> None:
    """A flow that validates: its graph has the plan's nodes, in order, and the plan's edges."""
    plan = build_plan(definition, registry, **kw)
    assert graph.valid and graph.issues == []
    assert [n.id for n in graph.nodes] == [n.id for n in plan.nodes]
    assert pairs(graph) == {(plan.nodes[d].id, n.id) for n in plan.nodes for d in n.deps}
    assert all(not n.issues for n in graph.nodes)


def test_idp_flow(registry):
    definition = json.loads((ROOT / "flows" / "idp.json").read_text())
    graph = flow_graph(definition, registry)
    assert_is_the_plans(graph, definition, registry)
    assert (graph.name, graph.version) == ("idp", definition["version"])
    text = graph.node("text")
    assert (text.kind, text.block) == ("block", "pdf.text")
    assert text.runtime == registry.blocks["pdf.text"].cls.manifest.runtime
    assert text.reads["path"] == "pdf_path"  # the rename: text reads decrypt's copy
    assert "pdf_path" in edge(graph, "decrypt", "text").keys
    ocr = graph.node("ocr")
    assert (ocr.kind, ocr.map_over, ocr.map_as) == ("map", "needs_ocr_pages", "page")
    assert "needs_ocr_pages" in ocr.keys_read and "page" not in ocr.keys_read
    assert edge(graph, "text", "ocr").keys == ("needs_ocr_pages",)
    entities = graph.node("entities")
    # hf.ner reads `language` itself (a model per language), no `when` any more
    assert entities.when is None and entities.reads.get("language") == "language"
    assert "language" in edge(graph, "language", "entities").keys
    assert entities.description and "unsupported_language" in entities.description
    assert all(e.case is None for e in graph.edges)
    assert ("decrypt", "merge") not in pairs(graph)


def test_example_flows(registry):
    ocr = json.loads((ROOT / "plugins" / "docpipe-ocr" / "flows" / "ocr.json").read_text())
    assert_is_the_plans(flow_graph(ocr, registry), ocr, registry)
    hello_registry = Registry(entry_points=False, extra=[HELLO, TOYS])
    hello = {"name": "hello", "version": "1", "steps": [
        {"id": "greet", "block": "hello.greet", "params": {"greeting": "bonjour"}},
        {"id": "shout", "block": "toy.upper", "inputs": {"text": "greeting"}, "outputs": {"upper": "loud"}}]}
    graph = flow_graph(hello, hello_registry)
    assert_is_the_plans(graph, hello, hello_registry)
    assert graph.node("greet").reads == {"path": "path"} and graph.node("greet").writes == {"greeting": "greeting"}
    assert graph.node("shout").writes == {"upper": "loud"}
    assert graph.edges == [GraphEdge(graph.node("greet").idx, graph.node("shout").idx, ("greeting",))]


@pytest.fixture
def kinds(tmp_path: Path) -> dict[str, Any]:
    """A flow with a step of every kind, nested: a switch, a fork, a join, a map, a subflow."""
    (tmp_path / "sub.json").write_text(json.dumps({"name": "sub", "version": "1", "steps": [
        {"id": "w", "block": "toy.words"}, {"id": "n", "expr": "words + 1", "output": "more"}]}))
    return {"name": "kinds", "version": "1", "steps": [
        {"id": "read", "block": "toy.read"},
        {"id": "route", "switch": "'many' if len(lines) > 2 else 'few'",
         "cases": {"many": [{"id": "m", "expr": "'MANY'", "output": "label"}],
                   "few": [{"id": "f", "expr": "'FEW'", "output": "label"},
                           {"id": "deep", "switch": "label", "cases": {"FEW": [
                               {"id": "tiny", "expr": "1", "output": "tiny"}]}}]},
         "default": [{"id": "d", "expr": "'?'", "output": "label"}]},
        {"id": "par", "fork": [[{"id": "up", "block": "toy.upper"}, {"id": "dig", "block": "toy.digest"}],
                               [{"id": "wc", "block": "toy.words", "outputs": {"words": "wc"}}]]},
        {"id": "both", "join": ["par", "route"]},
        {"id": "each", "map": "lines", "as": "line", "block": "toy.linelen"},
        {"id": "inner", "subflow": "sub.json", "when": "len(label) > 1", "outputs": {"more": "sub_more"}},
    ]}


def test_every_kind_and_its_structure(registry, kinds, tmp_path):
    graph = flow_graph(kinds, registry, base_dir=tmp_path)
    assert_is_the_plans(graph, kinds, registry, base_dir=tmp_path)
    assert {n.id: n.kind for n in graph.nodes} == {
        "read": "block", "route": "switch", "m": "expr", "f": "expr", "deep": "switch", "tiny": "expr",
        "d": "expr", "up": "block", "dig": "block", "wc": "block", "par": "fork", "both": "join",
        "each": "map", "inner": "subflow"}
    assert build_plan(kinds, registry, base_dir=tmp_path).node("par").kind == "join"  # how the engine runs it
    # a switch: its cases (the default is ""), their guards, the case on each edge into them
    route, deep = graph.node("route"), graph.node("deep")
    assert {case: ids(graph, steps) for case, steps in route.cases.items()} == {
        "many": ["m"], "few": ["f", "deep"], "": ["d"]}
    assert route.expr == "'many' if len(lines) > 2 else 'few'" and route.writes == {}
    assert graph.node("tiny").guards == ((route.idx, "few"), (deep.idx, "FEW"))
    assert (edge(graph, "route", "m").case, edge(graph, "route", "d").case) == ("many", "")
    assert edge(graph, "deep", "tiny").case == "FEW" and edge(graph, "route", "tiny").case == "few"
    assert edge(graph, "read", "route").keys == ("lines",)
    # a fork: its branches in order, chained; the fork waits for the last step of each
    par = graph.node("par")
    assert [ids(graph, b) for b in par.branches] == [["up", "dig"], ["wc"]]
    assert edge(graph, "up", "dig").keys == ()  # ordering only: dig reads text, not upper
    assert {("dig", "par"), ("wc", "par")} <= pairs(graph) and ("up", "par") not in pairs(graph)
    assert graph.node("wc").writes == {"words": "wc"}
    assert graph.node("both").joins == ("par", "route") and {("par", "both"), ("route", "both")} <= pairs(graph)
    # a map: the list it runs over and the name each item is bound to
    each = graph.node("each")
    assert (each.map_over, each.map_as, each.reads, each.runtime) == ("lines", "line", {"line": "line"}, "process")
    assert edge(graph, "read", "each").keys == ("lines",)
    # a subflow: its own graph, nested; what it reads and writes (renamed) as a step of this one
    inner = graph.node("inner")
    assert (inner.subflow, inner.when, inner.runtime) == ("sub.json", "len(label) > 1", "inline")
    assert inner.reads == {"text": "text"} and inner.writes == {"words": "words", "more": "sub_more"}
    assert edge(graph, "read", "inner").keys == ("text",)
    assert {k for a in ("m", "f", "d") for k in edge(graph, a, "inner").keys} == {"label"}
    sub = inner.subgraph
    assert sub is not None and sub.valid and [n.id for n in sub.nodes] == ["w", "n"]
    assert pairs(sub) == {("w", "n")} and edge(sub, "w", "n").keys == ("words",)
    assert all(n.subgraph is None for n in graph.nodes if n.kind != "subflow")


def test_ui_step_reads_come_from_the_graph(registry, kinds, tmp_path):
    reads = step_reads(kinds, registry)
    assert reads["each"] == {"line": "lines[]"}  # the item reads one element of the list
    assert reads["wc"] == {"text": "text"} and reads["read"] == {"path": "path"}
    assert not {"route", "m", "par", "inner"} & set(reads)


INVALID = {
    "unknown block and what follows": [
        {"id": "read", "block": "toy.read"},
        {"id": "mystery", "block": "no.such", "after": ["read"]},
        {"id": "words", "block": "toy.words", "when": "mystery_out is not None"},
        {"id": "shout", "block": "toy.upper", "after": ["mystery", "ghost"]}],
    "a suggested block": [{"id": "read", "block": "toy.reed"}, {"id": "up", "block": "toy.upper"}],
    "bad params, two writers": [
        {"id": "read", "block": "toy.read"},
        {"id": "dig", "block": "toy.digest", "params": {"rounds": "many"}},
        {"id": "again", "expr": "text", "output": "digest"}],
    "cycle": [
        {"id": "read", "block": "toy.read"},
        {"id": "a", "expr": "b_out", "output": "a_out"}, {"id": "b", "expr": "a_out", "output": "b_out"}],
    "duplicate id, bad expression": [
        {"id": "read", "block": "toy.read"}, {"id": "read", "expr": "text +", "output": "x"}],
    "schema": [{"id": "read", "block": "toy.read"}, {"id": "<bad>", "expr": "text + '!'", "output": "x"}],
}


@pytest.mark.parametrize("name", INVALID)
def test_an_invalid_flow_has_a_graph_and_the_plans_issues(registry, name):
    definition = {"name": "bad", "version": "1", "steps": INVALID[name]}
    with pytest.raises(FlowError) as raised:
        build_plan(definition, registry)
    graph = flow_graph(definition, registry)
    assert graph.issues == raised.value.issues and not graph.valid
    assert len(graph.nodes) == len(definition["steps"])
    for node in graph.nodes:
        assert list(node.issues) == [i for i in graph.issues if i.step == node.id]


def test_an_invalid_flows_edges_and_marks(registry):
    definition = {"name": "bad", "version": "1", "steps": INVALID["unknown block and what follows"]}
    graph = flow_graph(definition, registry)
    mystery = graph.node("mystery")
    assert (mystery.block, mystery.runtime) == ("no.such", None)
    assert [i.key for i in mystery.issues] == ["block"] and "unknown block 'no.such'" in mystery.issues[0].message
    assert any("ghost" in i.message for i in graph.node("shout").issues)
    assert {("read", "mystery"), ("mystery", "shout"), ("read", "words"), ("read", "shout")} <= pairs(graph)
    cycle = flow_graph({"name": "c", "version": "1", "steps": INVALID["cycle"]}, registry)
    assert {("a", "b"), ("b", "a")} <= pairs(cycle) and edge(cycle, "a", "b").keys == ("a_out",)
    assert any(i.message.startswith("cycle: ") for i in cycle.issues)


def test_a_flow_that_breaks_the_schema_is_walked_as_far_as_it_goes(registry):
    definition = {"name": "s", "version": "1", "steps": [
        {"id": "read", "block": "toy.read"},
        {"id": "<script>", "expr": "text + '!'", "output": "x", "colour": "red"},
        "not a step",
        {"block": "toy.upper", "inputs": {"text": 5}, "params": [1]},
        {"id": "route", "switch": "x", "cases": {"a": "not a list"}, "default": [{"id": "d", "map": 3}]}]}
    graph = flow_graph(definition, registry)
    assert graph.issues == schema_issues(definition)  # only the schema's, as build_plan says
    assert [n.id for n in graph.nodes] == ["read", "<script>", "step 3", "route", "d"]
    assert edge(graph, "read", "<script>").keys == ("text",)
    assert graph.node("<script>").issues and graph.node("d").kind == "map"


def test_nothing_a_flow_holds_breaks_the_walk(registry, kinds, tmp_path):
    """Any field of any step set to any JSON value: the graph is made, and its issues are the
    ones build_plan raises (none when it plans)."""
    rng = random.Random(15)
    values: list[Any] = [None, 5, -1, "", "x", "lines", [], [1], ["read"], {}, {"a": 1}, {"text": "x"},
                         "${params.nope}", [[{"id": "q"}]], [{"id": "z", "expr": "1", "output": "z"}]]
    for _ in range(300):
        definition = copy.deepcopy(kinds)
        for _ in range(rng.randint(1, 3)):
            step = rng.choice(_all_steps(definition["steps"]))
            step[rng.choice([*sorted(step), "as", "inputs", "outputs", "after", "when", "params", "retry"])] = (
                rng.choice(values))
        graph = flow_graph(definition, registry, base_dir=tmp_path)
        try:
            build_plan(definition, registry, base_dir=tmp_path)
        except FlowError as exc:
            assert graph.issues == exc.issues
        else:
            assert graph.valid


def _all_steps(steps: Any) -> list[dict[str, Any]]:
    found = []
    for step in steps if isinstance(steps, list) else []:
        if isinstance(step, dict):
            found.append(step)
            for branch in step.get("fork") if isinstance(step.get("fork"), list) else []:
                found += _all_steps(branch)
            cases = step.get("cases") if isinstance(step.get("cases"), dict) else {}
            for case in [*cases.values(), step.get("default")]:
                found += _all_steps(case)
    return found


def test_a_subflow_that_does_not_validate(registry, tmp_path):
    (tmp_path / "sub.json").write_text(json.dumps({"name": "sub", "version": "1", "steps": [
        {"id": "w", "block": "no.such"}]}))
    definition = {"name": "p", "version": "1", "steps": [
        {"id": "read", "block": "toy.read"}, {"id": "inner", "subflow": "sub.json"},
        {"id": "gone", "subflow": "missing.json"}]}
    graph = flow_graph(definition, registry, base_dir=tmp_path)
    inner = graph.node("inner")
    assert inner.issues and inner.issues[0].message.startswith("in subflow sub.json: step 'w'")
    assert inner.subgraph is not None and inner.subgraph.node("w").runtime is None
    assert inner.subgraph.issues and inner.reads == {}  # what it would read is not known
    gone = graph.node("gone")
    assert gone.subgraph is None and "does not exist" in gone.issues[0].message
