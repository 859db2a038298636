"""What the pages and the API show, read from the store and the plugin registry.

Every function here returns plain JSON-ready dicts; the API returns them as
they are and the templates render the same dicts, so the two never disagree.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from docpipe import steps
from docpipe.blobs import is_blob_ref
from docpipe.planner import build_plan, flow_graph
from docpipe.plugins import Registry
from docpipe.server import graph
from docpipe.status import Status
from docpipe.store import Store

#: Statuses a flow run can have, in the order the counts show them.
STATUSES = (Status.RUNNING, Status.FAILED, Status.SUCCEEDED)
#: Output values whose JSON is longer than this are folded away on the run page.
INLINE_LIMIT = 2000


def blob_url(digest: str, kind: str = "json") -> str:
    return f"/api/blobs/{digest}?type={'bytes' if kind == 'bytes' else 'json'}"


def _value(value: Any) -> dict[str, Any]:
    """One output value as shown: a link to its blob, or its JSON text (``long`` when folded)."""
    if is_blob_ref(value):
        return {"blob": value["$blob"], "url": blob_url(value["$blob"], value["type"]), "size": value["size"],
                "type": value["type"]}
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return {"json": text, "long": len(text) > INLINE_LIMIT}


def shown_values(values: dict[str, Any] | None) -> list[dict[str, Any]]:
    """``[{"key", "json" | "blob"/"url"/"size"}]`` for the outputs of a run or a step."""
    return [{"key": key, **_value(v)} for key, v in (values or {}).items()]


def list_runs(store: Store, *, status: str | None = None, flow: str | None = None,
              batch_id: str | None = None, correlation_id: str | None = None,
              since: float | None = None, until: float | None = None, page: int = 1,
              per_page: int = 50) -> dict[str, Any]:
    """One page of flow runs, newest first, with the counts by status under the same filters
    (the status filter aside, so the counts say what each status button would show)."""
    filters: dict[str, Any] = {"flow": flow, "batch_id": batch_id, "correlation_id": correlation_id,
               "since": since, "until": until}
    counts = store.count_runs(**filters)
    total = counts.get(status, 0) if status else sum(counts.values())
    per_page = max(1, min(per_page, 500))
    pages = max(1, math.ceil(total / per_page))
    page = max(1, min(page, pages + 1))  # past the end: an empty page, never an offset SQL cannot hold
    runs = store.list_runs(status=status, **filters, limit=per_page, offset=(page - 1) * per_page)
    return {"runs": runs, "counts": {s: counts.get(s, 0) for s in sorted(set(STATUSES) | set(counts))},
            "total": total, "page": page, "pages": pages, "per_page": per_page,
            "in_progress": counts.get(Status.RUNNING, 0) > 0}


def _timeline(tasks: list[dict[str, Any]]) -> tuple[float | None, float]:
    """The run's first start and its span in seconds (at least a millisecond)."""
    starts = [t["started_at"] for t in tasks if t["started_at"] is not None]
    ends = [t["finished_at"] or t["started_at"] for t in tasks if t["started_at"] is not None]
    if not starts:
        return None, 0.001
    return min(starts), max(max(ends) - min(starts), 0.001)


def step_reads(definition: dict[str, Any], registry: Registry) -> dict[str, dict[str, str]]:
    """``{step id: {what the block reads: the state key it reads it from}}`` for the block and
    map steps of ``definition`` whose block is installed (a map's item key reads the list:
    ``"list[]"``), from the planner's graph."""
    reads: dict[str, dict[str, str]] = {}
    for node in flow_graph(definition, registry).nodes:
        if node.kind not in ("block", "map") or node.runtime is None:
            continue
        keys = dict(node.reads)
        if node.kind == "map" and node.map_as is not None:
            keys[node.map_as] = f"{node.map_over}[]"
        reads[node.id] = keys
    return reads


def _with_inputs(run: dict[str, Any], definition: dict[str, Any], registry: Registry) -> None:
    """Give each top-level block step its ``shown_inputs``: the state values it read, from the
    document path and the outputs the other steps recorded (inputs themselves are not stored)."""
    state: dict[str, Any] = {"path": run["document"]}
    paths = [steps.parse(t["step"]) for t in run["tasks"]]
    for t, path in zip(run["tasks"], paths, strict=True):
        if t["status"] == Status.SUCCEEDED and t["outputs"] and not path.nested and not path.is_item:
            state.update(t["outputs"])
    reads = step_reads(definition, registry)
    for t, path in zip(run["tasks"], paths, strict=True):
        keys = reads.get(path.step) if not path.nested else None
        found: dict[str, Any] = {}
        for k, v in (keys or {}).items():
            if not v.endswith("[]"):
                if v in state:
                    found[k if k == v else f"{k} ← {v}"] = state[v]
            elif path.item is None:  # the map step itself: the whole list
                found[f"{k} ← each of {v[:-2]}"] = state.get(v[:-2])
            elif isinstance(state.get(v[:-2]), list) and path.item < len(state[v[:-2]]):
                found[f"{k} ← {v[:-2]}[{path.item}]"] = state[v[:-2]][path.item]
        t["shown_inputs"] = shown_values(found)


def get_run(store: Store, run_id: str, registry: Registry | None = None) -> dict[str, Any] | None:
    """A flow run with every task attempt, its timeline geometry and its shown values.

    Blob references are not resolved: large values are links to ``/api/blobs/…``.
    Each task gets ``left``/``width`` (percent of the run's span) for the timeline,
    ``parent`` (the map/subflow step it belongs to, or ``None``), ``children``
    (how many tasks belong to it), ``shown_outputs`` and, given the ``registry``,
    ``shown_inputs`` of block steps.
    """
    run = store.get_run(run_id, resolve_blobs=False)
    if run is None:
        return None
    tasks = run["tasks"]
    for t in tasks:
        t["shown_inputs"] = []
    batch = store.batch(run["batch_id"]) if registry is not None else None
    if batch is not None and registry is not None:
        _with_inputs(run, batch["definition"], registry)
    t0, span = _timeline(tasks)
    children: dict[str, int] = {}
    for t in tasks:
        parent = steps.parse(t["step"]).parent
        t["parent"] = parent
        if parent is not None:
            children[parent] = children.get(parent, 0) + 1
    for t in tasks:
        t["children"] = children.get(t["step"], 0)
        t["shown_outputs"] = shown_values(t["outputs"])
        if t0 is None or t["started_at"] is None:
            t["left"], t["width"] = 0.0, 0.0
            continue
        end = t["finished_at"] or t["started_at"]
        t["left"] = round(100 * (t["started_at"] - t0) / span, 3)
        t["width"] = round(max(100 * (end - t["started_at"]) / span, 0.3), 3)
        t["offset"] = t["started_at"] - t0
    run["span"] = span
    run["tasks"] = _tree_order(tasks)
    run["shown_outputs"] = shown_values(run["outputs"])
    run["failed_tasks"] = [t for t in tasks if t["traceback"] or t["error"]]
    return run


def _tree_order(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks in start order, each map/subflow step followed by its children (``depth`` set).

    A child whose parent has no record (a map whose item failed records the item, not the
    map) stays where it started, at the top level."""
    steps = {t["step"] for t in tasks}
    by_parent: dict[str | None, list[dict[str, Any]]] = {}
    for t in tasks:
        parent = t["parent"] if t["parent"] in steps else None
        by_parent.setdefault(parent, []).append(t)
    out: list[dict[str, Any]] = []
    expanded: set[str] = set()

    def walk(parent: str | None, depth: int) -> None:
        for t in by_parent.get(parent, []):
            t["depth"] = depth
            out.append(t)
            if t["step"] not in expanded:
                expanded.add(t["step"])
                walk(t["step"], depth + 1)

    walk(None, 0)
    return out


def list_flows(store: Store) -> list[dict[str, Any]]:
    """Flows by name, each with its recorded versions (oldest first) and total runs."""
    by_name: dict[str, dict[str, Any]] = {}
    for f in store.list_flows():
        entry = by_name.setdefault(f["name"], {"name": f["name"], "versions": [], "n_runs": 0})
        entry["versions"].append(f)
        entry["n_runs"] += int(f["n_runs"])
    return list(by_name.values())


def get_flow(store: Store, name: str, version: str | None = None,
             content_hash: str | None = None) -> dict[str, Any] | None:
    """One recorded flow version with its ``definition`` and every ``versions`` of its name."""
    flow = store.get_flow(name, version=version, content_hash=content_hash)
    if flow is None:
        return None
    flow["versions"] = [f for f in store.list_flows() if f["name"] == name]
    return flow


def flow_svg(definition: dict[str, Any], registry: Registry) -> str | None:
    """The flow's graph as SVG from :mod:`docpipe.server.graph`, or ``None`` when drawing
    fails on this definition."""
    try:
        return graph.flow_svg(definition, registry)
    except Exception:  # noqa: BLE001 - a drawing problem must not take the page down
        return None


def list_blocks(registry: Registry) -> dict[str, Any]:
    """Installed plugins with their blocks and manifests, and the plugins that failed to load."""
    plugins: dict[str, dict[str, Any]] = {}
    for info in sorted(registry.blocks.values(), key=lambda i: i.name):
        plugin = plugins.setdefault(info.plugin, {"plugin": info.plugin, "distribution": info.dist,
                                                  "version": info.dist_version, "origin": info.origin,
                                                  "blocks": []})
        plugin["blocks"].append(info.describe())
    broken = [{"plugin": b.plugin, "distribution": b.dist, "error": b.error, "traceback": b.traceback}
              for b in registry.broken]
    return {"plugins": list(plugins.values()), "broken": broken}


def upload_name(document: str, uploads: Path) -> str | None:
    """The original file name of an uploaded document (from its metadata file), else ``None``."""
    path = Path(document)
    if path.parent != uploads:
        return None
    try:
        meta = json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = meta.get("filename")
    return str(name) if name else None


#: Result file formats: suffix -> media type.
RESULT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


def output_keys(batch: dict[str, Any], rows: list[dict[str, Any]], registry: Registry) -> list[str]:
    """The output columns of a batch, as ``docpipe run --out`` writes them: the flow's
    ``outputs``, else the plan's (built from the recorded definition and params: nothing
    runs, so masked secrets need not be given), else the keys the rows hold."""
    definition = batch["definition"]
    if "outputs" in definition:
        return [str(k) for k in definition["outputs"]]
    try:
        return list(build_plan(definition, registry, params=batch["params"] or {}).outputs)
    except Exception:  # noqa: BLE001 - a block no longer installed: the recorded keys still say it
        return list(dict.fromkeys(k for r in rows for k in (r["outputs"] or {})))


def write_batch_results(store: Store, batch_id: str, registry: Registry, uploads: Path, fmt: str,
                        folder: Path) -> Path | None:
    """Write batch ``batch_id``'s results file (``fmt``: ``csv`` or ``jsonl``) into ``folder``
    with :func:`docpipe.outputs.write_results`, from the store, as ``docpipe run --out`` does;
    an uploaded document's row names it by its original file name. ``None``: no such batch."""
    from docpipe.outputs import write_results

    batch = store.batch(batch_id)
    if batch is None:
        return None
    rows = store.batch_outputs(batch_id)
    for row in rows:
        row["document"] = upload_name(row["document"], uploads) or row["document"]
    return write_results(folder / f"results.{fmt}", rows, output_keys(batch, rows, registry))


def results_filename(batch: dict[str, Any], fmt: str) -> str:
    """``<flow>-<batch id>.<fmt>``, with only safe characters."""
    flow = re.sub(r"[^A-Za-z0-9._-]+", "_", str(batch.get("flow") or "results")).strip("._") or "results"
    return f"{flow}-{batch['id']}.{fmt}"
