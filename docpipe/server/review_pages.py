"""The review pages: the queue (``/review``) and a task (``/review/{id}``) with its document's
pages rendered as images (PyMuPDF, once per page: cached in the blob store).

Reading goes through :mod:`docpipe.service` (the review functions) and the store, as the other
pages do; the page's script (``static/review.js``) claims and answers through the REST API
(``/api/review/tasks/...``) with the token the UI keeps, and the reviewer's name it keeps in
``sessionStorage``. See docs/ui.md, "Review pages".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from docpipe import service
from docpipe.server import data
from docpipe.server.actions import ActionError
from docpipe.server.pages import Ctx, can_read_page, error_page, render
from docpipe.status import ReviewStatus, Status
from docpipe.store import Store

router = APIRouter(dependencies=[Depends(can_read_page)], include_in_schema=False)

KINDS = ("choose", "edit", "approve")
#: tasks listed on the queue page (the counts above the list cover every waiting task)
SHOWN = 200
#: the rendered pages' scale: 1.5 × 72 dpi, an A4 page about 900 pixels wide
ZOOM = 1.5
#: files PyMuPDF renders as pages (a text file is shown as its text only)
RENDERED = frozenset({".pdf", ".xps", ".oxps", ".epub", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp",
                      ".gif", ".pnm", ".webp"})
#: the lease a page's claim asks for, unless ``?lease=`` says otherwise (bounded)
LEASE_S = service.DEFAULT_LEASE_S
LEASE_RANGE = (1, 8 * 3600)
#: recorded keys holding a document's text, best first: per page, then whole
_PAGE_TEXT_KEYS = ("page_texts", "ocr_page_texts")
_TEXT_KEYS = ("full_text", "text", "ocr_text")


def age(seconds: float | None) -> str:
    """``42 s``, ``5 min``, ``3.5 h``, ``2.0 d``."""
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


@router.get("/review")
def queue_page(request: Request, ctx: Ctx, flow: str = "", kind: str = "", status: str = "waiting",
               done: str = "") -> Response:
    """Waiting tasks oldest first, counts by status, flow and kind, the oldest task's age."""
    status = status or "waiting"
    try:
        tasks = service.list_tasks(ctx.store, status=None if status == "all" else status, flow=flow or None,
                                   kind=kind or None, limit=SHOWN + 1)
    except service.ServiceError as exc:
        return error_page(request, 400, str(exc))
    now = time.time()
    summary = ctx.store.reviews.waiting_summary(now=now)
    by_flow, by_kind = summary["by_flow"], summary["by_kind"]
    oldest = now - summary["oldest"] if summary["oldest"] is not None else None
    for t in tasks:
        t["age"] = age(now - t["created_at"])
        t["summary"] = _summary(t)
        t["name"] = Path(t["document"]).name
    counts = {s.value: 0 for s in ReviewStatus} | ctx.store.reviews.count()
    filters = {"flow": flow, "kind": kind, "status": status}
    first = next((t for t in tasks if t["status"] == ReviewStatus.WAITING), None)
    return render(request, "review_queue.html", nav="review", tasks=tasks[:SHOWN], more=len(tasks) > SHOWN,
                  counts=counts, by_flow=by_flow, by_kind=by_kind, oldest=age(oldest), filters=filters,
                  kinds=KINDS, statuses=[s.value for s in ReviewStatus],
                  flows=sorted(set(by_flow) | ({flow} if flow else set())),
                  done=done, first=first, filter_query=_filter_query(flow, kind),
                  query=lambda **kw: "?" + urlencode({k: v for k, v in {**filters, **kw}.items() if v}))


@router.get("/review/next")
def next_task(ctx: Ctx, after: str = "", flow: str = "", kind: str = "") -> Response:
    """The oldest waiting task (other than ``after``, the one just answered or skipped), else
    the queue."""
    for t in service.list_tasks(ctx.store, flow=flow or None, kind=kind or None, limit=2):
        if t["id"] != after:
            return RedirectResponse(f"/review/{t['id']}{_filter_query(flow, kind)}", status_code=303)
    query = {"flow": flow, "kind": kind, "done": after}
    return RedirectResponse("/review?" + urlencode({k: v for k, v in query.items() if v}), status_code=303)


@router.get("/review/{task_id}")
def task_page(request: Request, ctx: Ctx, task_id: str, lease: float = LEASE_S, flow: str = "",
              kind: str = "") -> Response:
    """One task: the document's pages and text, the proposal, the answer form."""
    try:
        task = service.get_task(ctx.store, task_id)
    except service.ServiceError as exc:
        refused = ActionError.of(exc)
        return error_page(request, refused.status, refused.message)
    run = ctx.store.get_run(task["flow_run_id"])
    state = _state(run)
    page_texts, text = _texts(state)
    n_pages, why_no_pages = page_count(task["document"])
    proposal = task["proposal"] or {}
    keys = list(task["keys"])
    marks = [str(v) for k in keys for v in _strings(proposal.get(k))] if task["kind"] == "edit" else []
    pages = [{"number": i + 1, "text": _marked(page_texts[i] if i < len(page_texts) else "", marks)}
             for i in range(n_pages)]
    if not pages and (page_texts or text):  # nothing to draw: the text alone
        pages = [{"number": i + 1, "text": _marked(t, marks)} for i, t in enumerate(page_texts or [text])]
    elif pages and not page_texts and text:
        pages[0]["text"] = _marked(text, marks)
    lease_s = min(max(lease, LEASE_RANGE[0]), LEASE_RANGE[1])
    now = time.time()
    held = task["status"] == ReviewStatus.CLAIMED
    return render(request, "review_task.html", nav="review", task=task, run=run, pages=pages,
                  n_images=n_pages, why_no_pages=why_no_pages, fields=_fields(task), choices=_choices(task),
                  extra=_extra(task), lease_s=lease_s, age=age(now - task["created_at"]),
                  held=held, held_for=age(task["lease_expires_at"] - now) if held else "",
                  doc_name=Path(task["document"]).name, filter_query=_filter_query(flow, kind),
                  upload=data.upload_name(task["document"], ctx.settings.uploads),
                  config=json.dumps({"task": task["id"], "kind": task["kind"], "keys": keys, "lease": lease_s,
                                     "status": task["status"], "flow": flow, "filterKind": kind,
                                     "answered_by": task["answered_by"]}, separators=(",", ":")))


@router.get("/review/{task_id}/pages/{number}.png")
def page_image(request: Request, ctx: Ctx, task_id: str, number: int) -> Response:
    """Page ``number`` (from 1) of the task's document as PNG, rendered once and then read from
    the blob store."""
    try:
        task = service.get_task(ctx.store, task_id)
    except service.ServiceError as exc:
        return Response(str(exc), status_code=404, media_type="text/plain")
    try:
        png = render_page(ctx.store, task["document"], number)
    except LookupError as exc:
        return Response(str(exc), status_code=404, media_type="text/plain")
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


def page_count(document: str) -> tuple[int, str]:
    """How many pages of ``document`` can be drawn, and why none when 0."""
    path = Path(document)
    if path.suffix.lower() not in RENDERED:
        return 0, ""
    try:
        pymupdf = _pymupdf()
    except ImportError:
        return 0, "PyMuPDF is not installed here: pages are not drawn (pip install pymupdf)"
    try:
        with pymupdf.open(path) as doc:
            if doc.needs_pass:
                return 0, "the document is encrypted and its password is not recorded: pages are not drawn"
            return int(doc.page_count), ""
    except Exception as exc:  # noqa: BLE001 - a missing or broken file: say so, show the text
        return 0, f"the document cannot be opened ({type(exc).__name__}: {exc})"


def render_page(store: Store, document: str, number: int, zoom: float = ZOOM) -> bytes:
    """PNG bytes of page ``number`` of ``document``: from the blob store when this page of this
    file (path, size, modification time) at this scale was rendered before, else rendered with
    PyMuPDF and stored (the blob, and an index file ``<blobs>/rendered/<key>`` naming it).
    :class:`LookupError` when the page cannot be drawn."""
    path = Path(document)
    if path.suffix.lower() not in RENDERED:
        raise LookupError(f"{path.name}: not a kind of file drawn as pages")
    try:
        st = path.stat()
    except OSError as exc:
        raise LookupError(f"{path.name}: {exc.strerror}") from None
    key = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{number}\0{zoom}".encode()).hexdigest()
    index = store.blobs.root / "rendered" / key
    try:
        digest = index.read_text(encoding="ascii").strip()
        return store.blobs.get(digest)
    except (OSError, ValueError):
        pass
    try:
        pymupdf = _pymupdf()
    except ImportError:
        raise LookupError("PyMuPDF is not installed") from None
    try:
        with pymupdf.open(path) as doc:
            if doc.needs_pass:
                raise LookupError(f"{path.name} is encrypted")
            if not 1 <= number <= doc.page_count:
                raise LookupError(f"{path.name} has no page {number}")
            png = bytes(doc[number - 1].get_pixmap(matrix=pymupdf.Matrix(zoom, zoom)).tobytes("png"))
    except LookupError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken file is a missing page, not a server error
        raise LookupError(f"{path.name}: page {number} cannot be drawn ({exc})") from None
    finally:
        pymupdf.TOOLS.store_shrink(100)  # MuPDF's cache of the document: a server lives long
    digest = store.blobs.put(png)
    index.parent.mkdir(parents=True, exist_ok=True)
    tmp = index.with_name(f".{key}.{os.getpid()}.{os.urandom(4).hex()}")
    tmp.write_text(digest, encoding="ascii")
    os.replace(tmp, index)
    return png


def _pymupdf() -> Any:
    import pymupdf  # lazily: the pages render only on a task page

    return pymupdf


def _filter_query(flow: str, kind: str) -> str:
    query = urlencode({k: v for k, v in {"flow": flow, "kind": kind}.items() if v})
    return f"?{query}" if query else ""


def _state(run: dict[str, Any] | None) -> dict[str, Any]:
    """What the run's succeeded top-level steps wrote, in order (the latest value wins)."""
    state: dict[str, Any] = {}
    for t in (run or {}).get("tasks", []):
        if t["status"] == Status.SUCCEEDED and t["outputs"] and "/" not in t["step"] and "[" not in t["step"]:
            state.update(t["outputs"])
    return state


def _texts(state: dict[str, Any]) -> tuple[list[str], str]:
    """The document's text per page (if recorded) and as a whole."""
    pages: list[str] = []
    for key in _PAGE_TEXT_KEYS:
        if isinstance(state.get(key), list) and all(isinstance(p, str) for p in state[key]):
            pages = list(state[key])
            break
    if not pages and isinstance(state.get("pages"), list):
        pages = [str(p.get("text") or "") for p in state["pages"] if isinstance(p, dict)]
    text = next((state[k] for k in _TEXT_KEYS if isinstance(state.get(k), str)), "")
    return pages, text


def _strings(value: Any) -> list[str]:
    """The text values to mark for a proposed value: a string, or the strings of a list."""
    if isinstance(value, str):
        return [value] if len(value.strip()) >= 2 else []
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


def _marked(text: str, marks: list[str]) -> list[tuple[str, bool]]:
    """``text`` cut into ``(part, marked)`` pieces, the occurrences of ``marks`` marked (longest
    first); the template escapes each piece."""
    if not marks or not text:
        return [(text, False)]
    pattern = re.compile("|".join(re.escape(m) for m in sorted(set(marks), key=len, reverse=True)))
    pieces: list[tuple[str, bool]] = []
    at = 0
    for found in pattern.finditer(text):
        if found.start() > at:
            pieces.append((text[at:found.start()], False))
        pieces.append((found.group(), True))
        at = found.end()
    pieces.append((text[at:], False))
    return [p for p in pieces if p[0]]


def _top(proposal: dict[str, Any], key: str) -> dict[str, float]:
    """``{label: score}`` from the proposal's top-k of ``key`` (``<key>_top``, ``<key>_top_k``)."""
    for name in (f"{key}_top", f"{key}_top_k"):
        top = proposal.get(name)
        if isinstance(top, list):
            return {str(t["label"]): float(t["score"]) for t in top
                    if isinstance(t, dict) and "label" in t and isinstance(t.get("score"), int | float)}
    return {}


def _choices(task: dict[str, Any]) -> list[dict[str, Any]]:
    """The buttons of the answer form: ``{value, label, score, proposed}``."""
    proposal = task["proposal"] or {}
    key = task["keys"][0]
    if task["kind"] == "approve":
        return [{"value": True, "label": "approve", "score": None, "proposed": True},
                {"value": False, "label": "reject", "score": None, "proposed": False}]
    if task["kind"] != "choose":
        return []
    top = _top(proposal, key)
    choices = task["choices"] or list(top)
    proposed = proposal.get(key)
    if proposed not in choices and choices:
        proposed = choices[0]
    return [{"value": c, "label": str(c), "score": top.get(str(c)), "proposed": c == proposed} for c in choices]


def _fields(task: dict[str, Any]) -> list[dict[str, Any]]:
    """The text fields of an ``edit`` form: ``{key, value, json}`` (a non-text value is edited
    as JSON)."""
    if task["kind"] != "edit":
        return []
    proposal = task["proposal"] or {}
    fields = []
    for key in task["keys"]:
        value = proposal.get(key)
        as_json = value is not None and not isinstance(value, str)
        text = json.dumps(value, ensure_ascii=False, indent=1) if as_json else (value or "")
        fields.append({"key": key, "value": text, "json": as_json, "long": as_json or len(text) > 60,
                       "score": proposal.get(f"{key}_score")})
    return fields


def _extra(task: dict[str, Any]) -> list[dict[str, Any]]:
    """The proposal's values as shown beside the question: each key with its score, then the
    other values it holds (``show`` keys)."""
    proposal = task["proposal"] or {}
    keys = list(task["keys"])
    shown: list[dict[str, Any]] = []
    for key in keys:
        score = proposal.get(f"{key}_score")
        shown.append({"key": key, "value": _short(proposal.get(key)), "score": score, "top": _top(proposal, key),
                      "main": True})
    skip = {k for key in keys for k in (key, f"{key}_score", f"{key}_top", f"{key}_top_k")}
    shown += [{"key": k, "value": _short(v), "score": None, "top": {}, "main": False}
              for k, v in proposal.items() if k not in skip]
    return shown


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 400 else text[:400] + "…"


def _summary(task: dict[str, Any]) -> str:
    """``doc_class = letter (0.39)`` for the queue."""
    proposal = task["proposal"] or {}
    parts = []
    for key in task["keys"]:
        score = proposal.get(f"{key}_score")
        value = _short(proposal.get(key))
        parts.append(f"{key} = {value[:60]}" + (f" ({score:.2f})" if isinstance(score, int | float) else ""))
    return "; ".join(parts)


__all__ = ["age", "page_count", "render_page", "router"]
