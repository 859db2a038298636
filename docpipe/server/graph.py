"""A flow's graph as a standalone SVG (no JavaScript, no dependencies), drawn on the server.

One box per step, an arrow per dependency: the plan's edges, or for a flow that does not
validate, best-effort ones from the definition, with its unknown blocks and issues in red.
Layered top to bottom (longest path), barycenter passes against crossings.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections import defaultdict
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from docpipe.errors import ExpressionError, FlowError
from docpipe.expr import Expression
from docpipe.flow import canonical_json, step_kind
from docpipe.planner import Plan, build_plan
from docpipe.plugins import Registry

#: kind -> (fill, stroke)
COLORS = {"block": ("#e8f0fe", "#4a6fb5"), "map": ("#e6f4ea", "#3b8a4f"), "expr": ("#f3e8fd", "#8756bd"),
          "switch": ("#fff1dc", "#cf7a1f"), "fork": ("#eceff1", "#37474f"), "join": ("#eceff1", "#37474f"),
          "subflow": ("#e0f5f7", "#00838f")}
BAD, EDGE, CASE = "#d93025", "#7a7f87", "#cf7a1f"
GAP_X, GAP_Y, MARGIN, CLIP, LINE = 36, 60, 16, 42, 18
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # not allowed in XML 1.0
_STYLE: dict[str, dict[str, Any]] = {"sub": {"fill": "#4b5563"}, "when": {"fill": "#8a5300", "font_style": "italic"},
                                      "bad": {"fill": BAD, "font_weight": 600}}

Guards = tuple[tuple[int, str], ...]
Edge = tuple[int, int]


@dataclass(eq=False)
class _Node:
    idx: int
    id: str = ""
    kind: str = "dummy"  # a step kind, or a bend point of a long edge
    step: dict[str, Any] = field(default_factory=dict)
    lines: list[tuple[str, str]] = field(default_factory=list)  # (text, style) under the id
    reads: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)
    guards: Guards = ()  # (switch node, case) pairs
    pre: set[int] = field(default_factory=set)  # explicit ordering: fork branches
    issues: list[str] = field(default_factory=list)
    layer: int = 0
    x: float = 0.0  # centre
    y: float = 0.0  # top
    w: float = 8.0
    h: float = 0.0


def _esc(text: Any) -> str:
    return escape(_CONTROL.sub("", str(text)), quote=True)


def _el(tag: str, body: str = "", **attrs: Any) -> str:
    """An SVG element; ``stroke_width=`` is ``stroke-width``, ``class_`` is ``class``; all escaped."""
    at = "".join(f' {k.rstrip("_").replace("_", "-")}="{_esc(round(v, 1) if isinstance(v, float) else v)}"'
                 for k, v in attrs.items() if v is not None)
    return f"<{tag}{at}>{body}</{tag}>" if body else f"<{tag}{at}/>"


def _clip(text: Any, n: int = CLIP) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _names(text: Any) -> set[str]:
    try:
        return set(Expression(text).names) if isinstance(text, str) else set()
    except ExpressionError:
        return set()


def _steps(nodes: list[_Node], steps: Any, guards: Guards, registry: Registry, chain: bool = False) -> list[int]:
    """Add steps (in the planner's order) with what they read and write; ``chain``: a fork branch."""
    added: list[int] = []
    for step in steps if isinstance(steps, list) else []:
        if isinstance(step, dict):
            first = len(nodes)
            idx = _step(nodes, step, guards, registry)
            for n in nodes[first:] if chain and added else []:
                n.pre.add(added[-1])
            added.append(idx)
    return added


def _step(nodes: list[_Node], step: dict[str, Any], guards: Guards, registry: Registry) -> int:
    kind, lasts = step_kind(step), []
    if kind == "fork":  # branches first; the fork step is where they join, as in the plan
        branches = step["fork"] if isinstance(step["fork"], list) else []
        lasts = [b[-1] for b in (_steps(nodes, br, guards, registry, chain=True) for br in branches) if b]
    n = _Node(len(nodes), str(step.get("id") or f"step {len(nodes) + 1}"), kind, step, guards=guards, pre=set(lasts))
    nodes.append(n)
    n.reads = set().union(*(_names(step.get(k)) for k in ("when", "expr", "switch")))
    if kind in ("block", "map"):
        info = registry.blocks.get(step["block"]) if isinstance(step.get("block"), str) else None
        if info is None:
            n.lines.append((f"unknown block {step.get('block')}", "bad"))
            n.issues.append(f"block '{step.get('block')}' is not installed")
        else:
            m, ins, outs = info.cls.manifest, step.get("inputs") or {}, step.get("outputs") or {}
            n.reads |= {ins.get(k, k) for k in m.reads if not (kind == "map" and k == step.get("as", "item"))}
            n.writes = {outs.get(k, k) for k in m.writes}
            n.lines.append((("map " if kind == "map" else "") + info.name, "sub"))
        if kind == "map":
            n.reads.add(str(step["map"]))
            n.lines.append((f"over {step['map']} as {step.get('as', 'item')}", "sub"))
    elif kind == "expr":
        n.writes = {str(step.get("output"))}
        n.lines.append((f"{step.get('output')} = {step['expr']}", "sub"))
    elif kind == "switch":
        n.lines.append((f"switch {step['switch']}", "sub"))
        cases = step.get("cases")
        for case, case_steps in (cases if isinstance(cases, dict) else {}).items():
            _steps(nodes, case_steps, (*guards, (n.idx, case)), registry)
        _steps(nodes, step.get("default"), (*guards, (n.idx, "")), registry)
    else:
        n.lines.append(({"fork": f"fork · joins {len(lasts)} branches", "subflow": f"subflow {step.get('subflow')}",
                         "join": "join · " + ", ".join(map(str, step.get("join") or []))}.get(kind, kind), "sub"))
    if "when" in step:
        n.lines.append((f"when {step['when']}", "when"))
    return n.idx


def _edges(nodes: list[_Node], plan: Plan | None) -> set[Edge]:
    """(from, to) node indices: the plan's dependencies, else the definition's best guess."""
    by_id = {n.id: n for n in nodes}
    if plan is not None and len(plan.nodes) == len(nodes) and {p.id for p in plan.nodes} == set(by_id):
        for p in plan.nodes:  # the plan also knows what subflows read and write
            by_id[p.id].reads = set(p.needs).union(*(e.names for e in (p.when, p.expr) if e is not None))
            by_id[p.id].writes = set(p.writes.values())
        return {(by_id[plan.nodes[d].id].idx, by_id[p.id].idx) for p in plan.nodes for d in p.deps}
    writers = {key: [n.idx for n in nodes if key in n.writes] for m in nodes for key in m.writes}
    found: set[Edge] = set()
    for n in nodes:
        found |= {(w, n.idx) for key in n.reads for w in writers.get(key, [])}
        found |= {(s, n.idx) for s, _ in n.guards} | {(p, n.idx) for p in n.pre}
        named = list(n.step.get("after") or []) + list(n.step.get("join") or [] if n.kind == "join" else [])
        found |= {(by_id[t].idx, n.idx) for t in named if isinstance(t, str) and t in by_id}
    return {(a, b) for a, b in found if a != b}


def _layout(nodes: list[_Node], edges: set[Edge]) -> tuple[dict[Edge, list[_Node]], set[Edge]]:
    """Place the nodes; returns each edge's route (through its dummies) and the back edges of cycles."""
    preds = {n.idx: {a for a, b in edges if b == n.idx} for n in nodes}
    left, back = {n.idx for n in nodes}, set()
    while left:  # longest-path layering; a cycle (invalid flows only) is broken at its first step
        ready = sorted(i for i in left if not {a for a in preds[i] if (a, i) not in back} & left)
        if not ready:
            back |= {(a, min(left)) for a in preds[min(left)] & left}
        for i in ready:
            nodes[i].layer = max((nodes[a].layer + 1 for a in preds[i] if (a, i) not in back), default=0)
        left -= set(ready)
    layers = [[n for n in nodes if n.layer == i] for i in range(max((n.layer for n in nodes), default=-1) + 1)]
    routes: dict[Edge, list[_Node]] = {}
    up: defaultdict[int, list[_Node]] = defaultdict(list)  # neighbours in the layer above / below
    down: defaultdict[int, list[_Node]] = defaultdict(list)
    ids = itertools.count(len(nodes))
    for a, b in sorted(edges - back):  # a long edge gets a dummy node in each layer it crosses
        route = [nodes[a]] + [_Node(next(ids), layer=lay) for lay in range(nodes[a].layer + 1, nodes[b].layer)]
        route.append(nodes[b])
        for u, v in zip(route, route[1:], strict=False):
            layers[v.layer].extend([v] if v.kind == "dummy" else [])
            down[u.idx].append(v)
            up[v.idx].append(u)
        routes[(a, b)] = route

    def crossings() -> int:
        pos = {n.idx: i for lay in layers for i, n in enumerate(lay)}
        segs = [[(pos[u.idx], pos[v.idx]) for u in lay for v in down[u.idx]] for lay in layers]
        return sum((a1 - a2) * (b1 - b2) < 0 for s in segs for i, (a1, b1) in enumerate(s) for a2, b2 in s[:i])

    best = (crossings(), [list(lay) for lay in layers])
    for sweep in range(8):  # barycenter passes, alternately down and up; keep the best order
        nbrs, span = (up, range(1, len(layers))) if sweep % 2 == 0 else (down, range(len(layers) - 2, -1, -1))
        for i in span:
            other = {n.idx: j for j, n in enumerate(layers[i - 1 if sweep % 2 == 0 else i + 1])}
            keyed = [(sum(other[m.idx] for m in nbrs[n.idx]) / len(nbrs[n.idx]) if nbrs[n.idx] else j, j, n)
                     for j, n in enumerate(layers[i])]  # a node without neighbours there stays put
            layers[i] = [n for *_, n in sorted(keyed, key=lambda t: t[:2])]
        if (count := crossings()) < best[0]:
            best = (count, [list(lay) for lay in layers])
    layers, top = best[1], float(MARGIN)
    for lay in layers:  # y: a row per layer; x: packed, then pulled toward the neighbours' mean
        height = max((n.h for n in lay), default=40.0)
        x = 0.0
        for n in lay:
            n.y, n.h, n.x, x = top, n.h or height, x + n.w / 2, x + n.w + GAP_X
        top += height + GAP_Y
    for sweep in range(8):
        nbrs = up if sweep % 2 == 0 else down
        for lay in layers if sweep % 2 == 0 else layers[::-1]:
            want = [sum(m.x for m in nbrs[n.idx]) / len(nbrs[n.idx]) if nbrs[n.idx] else n.x for n in lay]
            gaps = [(p.w + q.w) / 2 + (GAP_X if "dummy" not in (p.kind, q.kind) else 14)
                    for p, q in zip(lay, lay[1:], strict=False)]
            lo, hi = list(want), list(want)  # the mean of the two packings keeps every gap
            for i in range(1, len(lay)):
                lo[i] = max(want[i], lo[i - 1] + gaps[i - 1])
            for i in range(len(lay) - 2, -1, -1):
                hi[i] = min(want[i], hi[i + 1] - gaps[i])
            for n, low, high in zip(lay, lo, hi, strict=True):
                n.x = (low + high) / 2
    shift = MARGIN - min((n.x - n.w / 2 for lay in layers for n in lay), default=0.0)
    for n in (n for lay in layers for n in lay):
        n.x += shift
    return routes, back


def _shape(n: _Node, paint: dict[str, Any]) -> str:
    x, y, w, h = n.x - n.w / 2, n.y, n.w, n.h
    if n.kind == "switch":
        pts = [(x + 12, y), (x + w - 12, y), (x + w, y + h / 2), (x + w - 12, y + h), (x + 12, y + h), (x, y + h / 2)]
        return _el("polygon", class_="box", points=" ".join(f"{a:.1f},{b:.1f}" for a, b in pts), **paint)
    out = "".join(_el("rect", x=x + d, y=y + d, width=w, height=h, rx=6, **paint)
                  for d in ((8.0, 4.0) if n.kind == "map" else ()))  # map: a stack of cards, a run per item
    out += _el("rect", class_="box", x=x, y=y, width=w, height=h, rx=6, **paint)
    if n.kind in ("fork", "join"):  # the bar of a fork/join
        out += _el("rect", x=x, y=y, width=w, height=6, rx=2, fill=paint["stroke"])
    if n.kind == "subflow":  # double border: a flow inside
        out += _el("rect", x=x + 3, y=y + 3, width=w - 6, height=h - 6, rx=4, fill="none", stroke=paint["stroke"])
    return out


def _node_svg(n: _Node) -> str:
    fill, stroke = COLORS.get(n.kind, COLORS["block"])
    paint = {"fill": fill, "stroke": BAD if n.issues else stroke, "stroke_width": 2.5 if n.issues else 2,
             "stroke_dasharray": "6 3" if "when" in n.step else None}
    tip = [f"{n.id} ({n.kind})", str(n.step.get("description", ""))]
    tip += [f"{k}: {n.step[k]}" for k in ("block", "map", "as", "expr", "switch", "when", "subflow") if k in n.step]
    tip += [f"reads: {', '.join(sorted(n.reads))}" * bool(n.reads),
            f"writes: {', '.join(sorted(n.writes))}" * bool(n.writes), *(f"⚠ {i}" for i in n.issues)]
    body = _el("title", _esc("\n".join(t for t in tip if t))) + _shape(n, paint) + _el(
        "text", _esc(_clip(n.id)), x=n.x, y=n.y + 22, text_anchor="middle", font_size=13, font_weight=600,
        fill="#1f2328")
    body += "".join(_el("text", _esc(text), x=n.x, y=n.y + 22 + LINE * (i + 1), text_anchor="middle", font_size=11,
                        **_STYLE[style]) for i, (text, style) in enumerate(n.lines))
    block = n.step.get("block") if isinstance(n.step.get("block"), str) else None
    return _el("g", body, class_=f"node {n.kind}" + " when" * ("when" in n.step) + " issue" * bool(n.issues),
               data_step=n.id, data_kind=n.kind, data_block=block, data_subflow=n.step.get("subflow"),
               cursor="pointer" if n.kind == "subflow" else None)


def flow_svg(definition: dict[str, Any], registry: Registry | None = None, *, base_dir: str | Path = ".") -> str:
    """The flow's graph as a standalone ``<svg>`` string (``base_dir``: where subflow paths start)."""
    registry = registry if registry is not None else Registry()
    nodes: list[_Node] = []
    _steps(nodes, definition.get("steps"), (), registry)
    plan = None
    try:
        plan = build_plan(definition, registry, base_dir=base_dir)
    except FlowError as exc:  # the planner's issues, on their steps (unknown blocks are marked already)
        for n in nodes:
            n.issues += [i.message for i in exc.issues if i.step == n.id and not i.message.startswith("unknown block")]
    except OSError as exc:  # a subflow path that is not a readable file
        for n in nodes:
            n.issues += [str(exc)] if n.kind == "subflow" else []
    edges = _edges(nodes, plan)
    for n in nodes:
        n.lines = [(_clip(t), s) for t, s in n.lines]
        n.w = max(140.0, 8.6 * len(_clip(n.id)) + 24, *(6.3 * len(t) + 24 for t, _ in n.lines))
        n.h = 16.0 + LINE * (1 + len(n.lines))
    routes, back = _layout(nodes, edges)
    pid = "dp" + hashlib.sha256(canonical_json(definition).encode()).hexdigest()[:8]  # unique ids when inlined
    width = max((n.x + n.w / 2 for n in nodes), default=0) + MARGIN + (68 if back else 8)
    height = max((n.y + n.h for n in nodes), default=0) + MARGIN + 8
    out = [_el("title", _esc(f"flow {definition.get('name', '')} {definition.get('version', '')}")) + "<defs>"]
    out += [_el("marker", _el("path", d="M0,0 L10,5 L0,10 z", fill=color), id=f"{pid}-{tag}", viewBox="0 0 10 10",
                refX=10, refY=5, markerWidth=7, markerHeight=7, orient="auto")
            for tag, color in (("e", EDGE), ("c", CASE), ("b", BAD))]
    out.append("</defs>" + _el("rect", width="100%", height="100%", fill="#ffffff"))
    ports: dict[tuple[Edge, int], float] = {}  # edges leave a box's bottom, enter its top, spread
    for n in nodes:
        for side, ends in ((0, sorted((r[1].x, k) for k, r in routes.items() if r[0] is n)),
                           (1, sorted((r[-2].x, k) for k, r in routes.items() if r[-1] is n))):
            step = min(16.0, n.w * 0.6 / max(len(ends) - 1, 1))
            for i, (_, k) in enumerate(ends):
                ports[(k, side)] = n.x + (i - (len(ends) - 1) / 2) * step
    labels = []
    for (a, b), route in sorted(routes.items()):
        src, dst = nodes[a], nodes[b]
        pts = [(ports[((a, b), 0)], src.y + src.h + (8 if src.kind == "map" else 0))]
        pts += [p for d in route[1:-1] for p in ((d.x, d.y), (d.x, d.y + d.h))] + [(ports[((a, b), 1)], dst.y)]
        path = f"M{pts[0][0]:.1f},{pts[0][1]:.1f}"
        for i in range(0, len(pts) - 1, 2):  # a curve across each gap, straight through each dummy's row
            (x0, y0), (x1, y1) = pts[i], pts[i + 1]
            path += (f" L{x0:.1f},{y0:.1f}" if i else "") + (
                f" C{x0:.1f},{(y0 + y1) / 2:.1f} {x1:.1f},{(y0 + y1) / 2:.1f} {x1:.1f},{y1:.1f}")
        case = next((c for s, c in dst.guards if s == a), None)
        keys = sorted(src.writes & dst.reads)
        tip = f"{src.id} → {dst.id}" + f": {', '.join(keys)}" * bool(keys) + (
            f" (case {case or 'default'})" if case is not None else "")
        color, tag = (CASE, "c") if case is not None else (EDGE, "e")
        out.append(_el("g", _el("title", _esc(tip)) + _el(
            "path", d=path, fill="none", stroke=color, stroke_width=1.5, marker_end=f"url(#{pid}-{tag})",
            stroke_dasharray=None if keys or case is not None else "4 3"),  # ordering only: dashed
            class_="edge", data_from=src.id, data_to=dst.id))
        if case is not None:  # drawn last, on top of everything
            x, y, text = (pts[0][0] + pts[1][0]) / 2, (pts[0][1] + pts[1][1]) / 2, _clip(case or "default", 24)
            labels.append(_el("g", _el("rect", x=x - 3.4 * len(text) - 6, y=y - 9, width=6.8 * len(text) + 12,
                                       height=17, rx=8, fill="#ffffff", stroke=CASE)
                              + _el("text", _esc(text), x=x, y=y + 3.5, text_anchor="middle", font_size=11, fill=CASE),
                              class_="case-label", data_from=src.id, data_to=dst.id))
    for a, b in sorted(back):  # only flows with a cycle: red, round the right-hand side
        src, dst = nodes[a], nodes[b]
        x0, y0, x1, y1 = src.x + src.w / 2, src.y + src.h / 2, dst.x + dst.w / 2, dst.y + dst.h / 2
        bend = max(x0, x1) + 60
        out.append(_el("g", _el("title", "cycle") + _el(
            "path", d=f"M{x0:.1f},{y0:.1f} C{bend:.1f},{y0:.1f} {bend:.1f},{y1:.1f} {x1:.1f},{y1:.1f}", fill="none",
            stroke=BAD, stroke_width=1.5, marker_end=f"url(#{pid}-b)"), class_="edge back", data_from=src.id,
            data_to=dst.id))
    body = "\n".join([*out, *map(_node_svg, nodes), *labels])
    return _el("svg", "\n" + body + "\n", xmlns="http://www.w3.org/2000/svg", class_="docpipe-flow",
               data_flow=definition.get("name"), width=round(width), height=round(height),
               viewBox=f"0 0 {width:.0f} {height:.0f}", role="img",
               font_family="system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif")
