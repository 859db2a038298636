"""The server-side SVG drawing of a flow's graph (docpipe.server.graph)."""

from __future__ import annotations

import itertools
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from docpipe.planner import build_plan
from docpipe.plugins import Registry
from docpipe.server.graph import flow_svg

ROOT = Path(__file__).resolve().parents[2]
NS = "{http://www.w3.org/2000/svg}"


def draw(definition: dict[str, Any], registry: Registry, **kw: Any) -> ET.Element:
    text = flow_svg(definition, registry, **kw)
    root = ET.fromstring(text)  # standalone, well-formed SVG
    assert root.tag == f"{NS}svg"
    assert not list(root.iter(f"{NS}script"))
    return root


def nodes(root: ET.Element) -> dict[str, ET.Element]:
    found = [g for g in root.iter(f"{NS}g") if "node" in g.get("class", "").split()]
    by_id = {g.get("data-step"): g for g in found}
    assert len(by_id) == len(found)
    return by_id  # type: ignore[return-value]


def edges(root: ET.Element) -> set[tuple[str | None, str | None]]:
    return {(g.get("data-from"), g.get("data-to")) for g in root.iter(f"{NS}g")
            if "edge" in g.get("class", "").split()}


def texts(el: ET.Element) -> list[str]:
    return [t.text or "" for t in el.iter(f"{NS}text")]


def box(g: ET.Element) -> tuple[float, float, float, float]:
    """x0, y0, x1, y1 of a node's drawn shape."""
    shape = next(e for e in g if e.get("class") == "box")
    if shape.tag == f"{NS}polygon":
        pts = [tuple(map(float, p.split(","))) for p in shape.get("points", "").split()]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        return min(xs), min(ys), max(xs), max(ys)
    x, y = float(shape.get("x", 0)), float(shape.get("y", 0))
    return x, y, x + float(shape.get("width", 0)), y + float(shape.get("height", 0))


def assert_no_overlap(root: ET.Element) -> None:
    boxes = {sid: box(g) for sid, g in nodes(root).items()}
    for (a, (ax0, ay0, ax1, ay1)), (b, (bx0, by0, bx1, by1)) in itertools.combinations(boxes.items(), 2):
        assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, f"{a} overlaps {b}"
    width, height = float(root.get("width", 0)), float(root.get("height", 0))
    assert all(x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height for x0, y0, x1, y1 in boxes.values())


def step_ids(steps: list[dict[str, Any]]) -> list[str]:
    ids = []
    for s in steps:
        for branch in s.get("fork", []):
            ids += step_ids(branch)
        ids.append(s["id"])
        for case in [*s.get("cases", {}).values(), s.get("default", [])]:
            ids += step_ids(case)
    return ids


def test_idp_flow_draws_every_step_and_the_plans_edges(registry):
    definition = json.loads((ROOT / "flows" / "idp.json").read_text())
    root = draw(definition, registry)
    drawn = nodes(root)
    assert sorted(drawn) == sorted(step_ids(definition["steps"]))
    plan = build_plan(definition, registry)
    assert edges(root) == {(plan.nodes[d].id, n.id) for n in plan.nodes for d in n.deps}
    # dependencies the planner derives from reads, writes and renames (text reads decrypt's pdf_path)
    assert {("decrypt", "text"), ("text", "ocr"), ("ocr", "merge"), ("merge", "language"),
            ("language", "entities")} <= edges(root)
    assert ("decrypt", "merge") not in edges(root)
    assert drawn["text"].get("data-block") == "pdf.text" and "pdf.text" in texts(drawn["text"])
    ocr = drawn["ocr"]
    assert ocr.get("data-kind") == "map" and "over needs_ocr_pages as page" in texts(ocr)
    assert len(ocr.findall(f"{NS}rect")) == 3  # a stack of cards
    assert "when" in drawn["translate"].get("class", "").split()
    assert "when params.translation_model != None and…" in texts(drawn["translate"])  # cut short
    assert not any("issue" in g.get("class", "") for g in drawn.values())
    assert_no_overlap(root)
    # layered top to bottom: every edge points down
    for a, b in edges(root):
        assert box(drawn[a])[3] < box(drawn[b])[1]


def test_switch_fork_join_expr_and_subflow_are_told_apart(registry, tmp_path):
    (tmp_path / "sub.json").write_text(json.dumps(
        {"name": "sub", "version": "1", "steps": [{"id": "w", "block": "toy.words"}]}))
    definition = {"name": "kinds", "version": "1", "steps": [
        {"id": "read", "block": "toy.read"},
        {"id": "route", "switch": "'many' if len(lines) > 2 else 'few'",
         "cases": {"many": [{"id": "m", "expr": "'MANY'", "output": "label"}],
                   "few": [{"id": "f", "expr": "'FEW'", "output": "label"}]},
         "default": [{"id": "d", "expr": "'?'", "output": "label"}]},
        {"id": "par", "fork": [[{"id": "up", "block": "toy.upper"}, {"id": "dig", "block": "toy.digest"}],
                               [{"id": "wc", "block": "toy.words", "outputs": {"words": "wc"}}]]},
        {"id": "both", "join": ["par", "route"]},
        {"id": "inner", "subflow": "sub.json", "when": "len(label) > 1"},
    ]}
    root = draw(definition, registry, base_dir=tmp_path)
    drawn = nodes(root)
    assert {sid: g.get("data-kind") for sid, g in drawn.items()} == {
        "read": "block", "route": "switch", "m": "expr", "f": "expr", "d": "expr", "up": "block",
        "dig": "block", "wc": "block", "par": "fork", "both": "join", "inner": "subflow"}
    labels = {(g.get("data-from"), g.get("data-to")): texts(g) for g in root.iter(f"{NS}g")
              if g.get("class") == "case-label"}
    assert labels == {("route", "m"): ["many"], ("route", "f"): ["few"], ("route", "d"): ["default"]}
    assert {("route", "m"), ("up", "dig"), ("dig", "par"), ("wc", "par"), ("par", "both"), ("route", "both"),
            ("read", "inner"), ("m", "inner")} <= edges(root)
    assert drawn["route"].find(f"{NS}polygon") is not None
    assert drawn["inner"].get("data-subflow") == "sub.json"
    assert "when len(label) > 1" in texts(drawn["inner"])
    assert "fork · joins 2 branches" in texts(drawn["par"])
    assert "label = 'MANY'" in texts(drawn["m"])
    assert_no_overlap(root)


def test_user_text_is_escaped(registry):
    evil = "</text><script>alert(1)</script>"
    definition = {"name": "<x>&", "version": "1", "steps": [
        {"id": "read", "block": "toy.read", "description": evil},
        {"id": "<script>", "expr": f"text + '{evil}'", "output": "x", "when": "text != '&amp;\x01'"},
    ]}
    text = flow_svg(definition, registry)
    assert "<script>" not in text and "&lt;script&gt;" in text
    root = ET.fromstring(text)
    assert not list(root.iter(f"{NS}script"))
    drawn = nodes(root)
    assert set(drawn) == {"read", "<script>"}
    assert "issue" in drawn["<script>"].get("class", "")  # the id breaks the schema: marked, still drawn
    assert any(evil[:20] in t for t in texts(drawn["<script>"]))
    assert ("read", "<script>") in edges(root)


def test_unknown_blocks_still_draw(registry):
    definition = {"name": "t", "version": "1", "steps": [
        {"id": "read", "block": "toy.read"},
        {"id": "mystery", "block": "no.such", "after": ["read"]},
        {"id": "words", "block": "toy.words", "when": "mystery_out is not None"},
        {"id": "shout", "block": "toy.upper", "after": ["mystery"]},
    ]}
    root = draw(definition, registry)
    drawn = nodes(root)
    assert set(drawn) == {"read", "mystery", "words", "shout"}
    assert "issue" in drawn["mystery"].get("class", "").split()
    assert "unknown block no.such" in texts(drawn["mystery"])
    assert "not installed" in (drawn["mystery"].findtext(f"{NS}title") or "")
    # edges from the definition: `after`, and the known blocks' reads and writes
    assert {("read", "mystery"), ("mystery", "shout"), ("read", "words"), ("read", "shout")} <= edges(root)
    assert_no_overlap(root)


def test_idp_draws_with_no_plugins_installed():
    definition = json.loads((ROOT / "flows" / "idp.json").read_text())
    root = draw(definition, Registry(entry_points=False))
    drawn = nodes(root)
    assert sorted(drawn) == sorted(step_ids(definition["steps"]))
    assert all("issue" in g.get("class", "") for sid, g in drawn.items() if g.get("data-block"))
    assert_no_overlap(root)


@pytest.mark.parametrize("size", [1, 40])
def test_cycles_and_wide_flows_draw(registry, size):
    steps = [{"id": "read", "block": "toy.read"}]
    steps += [{"id": f"w{i}", "expr": f"len(text) + {i}", "output": f"o{i}"} for i in range(size)]
    steps += [{"id": "a", "expr": "b_out", "output": "a_out"}, {"id": "b", "expr": "a_out", "output": "b_out"}]
    root = draw({"name": "t", "version": "1", "steps": steps}, registry)
    assert len(nodes(root)) == size + 3
    assert {("a", "b"), ("b", "a")} <= edges(root)
    assert any("back" in g.get("class", "") for g in root.iter(f"{NS}g"))
    assert_no_overlap(root)
