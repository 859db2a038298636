"""A flow's graph as a standalone SVG (no JavaScript, no dependencies), drawn on the server.

One box per step, an arrow per dependency, both read from the planner's graph
(:func:`docpipe.planner.flow_graph`, which a flow that does not validate has too): this
module only lays it out and paints it, unknown blocks and issues in red.
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

from docpipe.flow import canonical_json
from docpipe.planner import GraphNode, flow_graph
from docpipe.plugins import Registry

#: kind -> (fill, stroke)
COLORS = {"block": ("#e8f0fe", "#4a6fb5"), "map": ("#e6f4ea", "#3b8a4f"), "expr": ("#f3e8fd", "#8756bd"),
          "switch": ("#fff1dc", "#cf7a1f"), "fork": ("#eceff1", "#37474f"), "join": ("#eceff1", "#37474f"),
          "subflow": ("#e0f5f7", "#00838f"), "review": ("#fdecea", "#c5221f")}
BAD, EDGE, CASE = "#d93025", "#7a7f87", "#cf7a1f"
GAP_X, GAP_Y, MARGIN, CLIP, LINE = 36, 60, 16, 42, 18
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # not allowed in XML 1.0
_STYLE: dict[str, dict[str, Any]] = {"sub": {"fill": "#4b5563"}, "when": {"fill": "#8a5300", "font_style": "italic"},
                                      "bad": {"fill": BAD, "font_weight": 600}}

Edge = tuple[int, int]


@dataclass(eq=False)
class _Node:
    idx: int
    step: GraphNode | None = None  # None: a bend point of a long edge
    lines: list[tuple[str, str]] = field(default_factory=list)  # (text, style) under the id
    issues: list[str] = field(default_factory=list)
    layer: int = 0
    x: float = 0.0  # centre
    y: float = 0.0  # top
    w: float = 8.0
    h: float = 0.0

    @property
    def kind(self) -> str:
        return self.step.kind if self.step else "dummy"

    @property
    def id(self) -> str:
        return self.step.id if self.step else ""


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


def _lines(g: GraphNode) -> list[tuple[str, str]]:
    """What a box says under the step's id: its block, expression, list, subflow; its ``when``."""
    if g.kind in ("block", "map") and g.runtime is None:
        lines = [(f"unknown block {g.block}", "bad")]
    elif g.kind in ("block", "map"):
        lines = [(("map " if g.kind == "map" else "") + str(g.block), "sub")]
    else:
        lines = [({"expr": f"{g.output} = {g.expr}", "switch": f"switch {g.expr}",
                   "fork": f"fork · joins {sum(1 for b in g.branches if b)} branches",
                   "subflow": f"subflow {g.subflow}", "join": "join · " + ", ".join(g.joins),
                   "review": _review_line(g)}.get(g.kind, g.kind),
                  "sub")]
    if g.kind == "map":
        lines.append((f"over {g.map_over} as {g.map_as}", "sub"))
    if g.when is not None:
        lines.append((f"when {g.when}", "when"))
    return lines


def _review_line(g: GraphNode) -> str:
    """``review · choose doc_class``: a person's step, and what it asks."""
    return f"review · {g.review.kind} {', '.join(g.review.keys)}" if g.review else "review"


def _issues(g: GraphNode) -> list[str]:
    """The planner's issues on the step; an unknown block says so in its own words."""
    issues = [i.message for i in g.issues if not i.message.startswith("unknown block")]
    if g.kind in ("block", "map") and g.runtime is None:
        issues.insert(0, f"block '{g.block}' is not installed")
    return issues


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


def _tip(g: GraphNode, issues: list[str]) -> str:
    """A box's tooltip: the step as the flow writes it, what it reads and writes, its issues."""
    shown = {"block": g.block, "map": g.map_over, "as": g.map_as, "expr": g.expr if g.kind == "expr" else None,
             "switch": g.expr if g.kind == "switch" else None, "when": g.when, "subflow": g.subflow}
    tip = [f"{g.id} ({g.kind})", g.description or ""]
    tip += [f"{k}: {v}" for k, v in shown.items() if v is not None]
    writes = sorted(g.writes.values())
    tip += [f"reads: {', '.join(g.keys_read)}" * bool(g.keys_read), f"writes: {', '.join(writes)}" * bool(writes),
            *(f"⚠ {i}" for i in issues)]
    return "\n".join(t for t in tip if t)


def _node_svg(n: _Node) -> str:
    g = n.step
    assert g is not None  # bend points are not drawn
    fill, stroke = COLORS.get(n.kind, COLORS["block"])
    paint = {"fill": fill, "stroke": BAD if n.issues else stroke, "stroke_width": 2.5 if n.issues else 2,
             "stroke_dasharray": "6 3" if g.when is not None else None}
    body = _el("title", _esc(_tip(g, n.issues))) + _shape(n, paint) + _el(
        "text", _esc(_clip(n.id)), x=n.x, y=n.y + 22, text_anchor="middle", font_size=13, font_weight=600,
        fill="#1f2328")
    body += "".join(_el("text", _esc(text), x=n.x, y=n.y + 22 + LINE * (i + 1), text_anchor="middle", font_size=11,
                        **_STYLE[style]) for i, (text, style) in enumerate(n.lines))
    return _el("g", body, class_=f"node {n.kind}" + " when" * (g.when is not None) + " issue" * bool(n.issues),
               data_step=n.id, data_kind=n.kind, data_block=g.block, data_subflow=g.subflow,
               cursor="pointer" if n.kind == "subflow" else None)


def flow_svg(definition: dict[str, Any], registry: Registry | None = None, *, base_dir: str | Path = ".") -> str:
    """The flow's graph as a standalone ``<svg>`` string (``base_dir``: where subflow paths start)."""
    graph = flow_graph(definition, registry if registry is not None else Registry(), base_dir=base_dir)
    nodes = [_Node(g.idx, g, [(_clip(t), s) for t, s in _lines(g)], _issues(g)) for g in graph.nodes]
    edges = {(e.source, e.target): e for e in graph.edges}
    for n in nodes:
        n.w = max(140.0, 8.6 * len(_clip(n.id)) + 24, *(6.3 * len(t) + 24 for t, _ in n.lines))
        n.h = 16.0 + LINE * (1 + len(n.lines))
    routes, back = _layout(nodes, set(edges))
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
        case, keys = edges[(a, b)].case, edges[(a, b)].keys
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
