"""Review tasks: what a reviewer can do whichever face they use (docs/review.md).

A run that reached a review step waits; its task is listed (:func:`list_tasks`), claimed
with a lease (:func:`claim`, :func:`release`) and answered (:func:`answer`). The answer is
checked against the task's kind and choices and recorded once: a second identical submit
returns the recorded answer, a different one is a :class:`Conflict`. An answered run
continues when its batch is resumed (:func:`continue_answered`, ``docpipe resume``, or at
once in a running server). The SQL is the store's (:class:`docpipe.store.review.ReviewTasks`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from docpipe.service.errors import Conflict, NotFound, ServiceError
from docpipe.service.runs import full_id
from docpipe.status import ReviewStatus, Status

if TYPE_CHECKING:
    from docpipe.engine import DocResult
    from docpipe.plugins import Registry
    from docpipe.service.batches import Outcome, RunOptions
    from docpipe.store import Store

#: how long a claim holds a task unless the reviewer says otherwise (seconds)
DEFAULT_LEASE_S = 600
_YES = ("true", "yes", "y", "approve", "approved", "accept", "ok", "1")
_NO = ("false", "no", "n", "reject", "rejected", "0")


def list_tasks(store: Store, *, status: str | None = ReviewStatus.WAITING, flow: str | None = None,
               kind: str | None = None, batch_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Review tasks oldest first (by default those waiting for a reviewer, expired claims
    included), filtered by status, flow name, kind and batch."""
    if status is not None and status not in tuple(ReviewStatus):
        raise ServiceError(f"status must be one of {', '.join(ReviewStatus)}", field="status")
    return store.reviews.tasks(status=status, flow=flow, kind=kind, batch_id=batch_id, limit=limit)


def get_task(store: Store, task_id: str) -> dict[str, Any]:
    """Task ``task_id`` (a unique prefix will do); :class:`NotFound` if there is none."""
    task = store.reviews.get(full_id(store, task_id, "task"))
    if task is None:
        raise NotFound(f"no review task {task_id}", field="task_id")
    return task


def claim(store: Store, task_id: str, reviewer: str, lease_s: float = DEFAULT_LEASE_S) -> dict[str, Any]:
    """Hold task ``task_id`` for ``reviewer`` for ``lease_s`` seconds (claiming it again renews
    the lease). :class:`Conflict` when another reviewer holds it or it is answered."""
    reviewer = _reviewer(reviewer)
    if lease_s <= 0:
        raise ServiceError("the lease must be longer than 0 seconds", field="lease_s")
    task = get_task(store, task_id)
    if not store.reviews.claim(task["id"], reviewer, lease_s):
        raise Conflict(_taken(get_task(store, task["id"])), field="task_id")
    return get_task(store, task["id"])


def release(store: Store, task_id: str, reviewer: str) -> dict[str, Any]:
    """Give back ``reviewer``'s claim of task ``task_id``: it waits for anyone again.
    :class:`Conflict` when ``reviewer`` does not hold it."""
    reviewer = _reviewer(reviewer)
    task = get_task(store, task_id)
    if not store.reviews.release(task["id"], reviewer):
        raise Conflict(f"review task {task['id']} is not claimed by {reviewer} ({_state(task)})", field="task_id")
    return get_task(store, task["id"])


def answer(store: Store, task_id: str, reviewer: str, value: Any) -> tuple[dict[str, Any], bool]:
    """Answer task ``task_id`` as ``reviewer``: ``(the task as recorded, whether this call
    answered it)``. ``value`` is checked against the kind (see :func:`answer_values`). A task
    answered before with the same values is returned as it is (a double submit); with other
    values, or held by another reviewer's lease, it is a :class:`Conflict`."""
    reviewer = _reviewer(reviewer)
    task = get_task(store, task_id)
    values = answer_values(task, value)
    if store.reviews.answer(task["id"], reviewer, values):
        return get_task(store, task["id"]), True
    task = get_task(store, task["id"])
    if task["status"] == ReviewStatus.ANSWERED and task["answer"] == values:
        return task, False
    raise Conflict(_taken(task), field="task_id")


def answer_values(task: dict[str, Any], value: Any) -> dict[str, Any]:
    """The values an answer writes, by key, checked against the task:

    * ``choose``: one of the task's choices (a string, or ``{key: choice}``);
    * ``edit``: ``{key: value}`` for some of the task's keys (the others keep the model's
      value); with one key, the value alone;
    * ``approve``: true or false (also ``yes``/``no``, ``approve``/``reject``).
    """
    keys, kind = list(task["keys"]), task["kind"]
    if isinstance(value, dict) and kind != "edit":
        if set(value) - set(keys) or len(value) != 1:
            raise ServiceError(f"answer with one value for {keys[0]}", field="answer")
        value = value[keys[0]]
    if kind == "choose":
        choices = task["choices"] or []
        if not isinstance(value, str) or (choices and value not in choices):
            raise ServiceError(f"choose one of: {', '.join(map(str, choices))}", field="answer")
        return {keys[0]: value}
    if kind == "approve":
        return {keys[0]: _yes_no(value)}
    given = value if isinstance(value, dict) else {keys[0]: value} if len(keys) == 1 else None
    if given is None:
        raise ServiceError(f"give the values as an object with some of the keys {', '.join(keys)}",
                           field="answer")
    unknown = sorted(set(given) - set(keys))
    if unknown or not given:
        raise ServiceError(f"this task edits {', '.join(keys)}" + (f", not {', '.join(unknown)}" if unknown else ""),
                           field="answer")
    proposal = task["proposal"] or {}
    return {k: given[k] if k in given else proposal.get(k) for k in keys}


@dataclass
class Continued:
    """What :func:`continue_answered` did: each batch resumed, and those it left alone."""

    outcomes: list[Outcome] = field(default_factory=list)
    #: batch id -> why it was not resumed
    skipped: dict[str, str] = field(default_factory=dict)


def continue_answered(store: Store, registry: Registry, options: RunOptions, batch_id: str | None = None,
                      on_document: Callable[[DocResult], None] | None = None) -> Continued:
    """Resume every batch (or batch ``batch_id``) that has a waiting run whose review tasks
    are all answered: those runs continue with the answers; unanswered ones keep waiting. A
    batch still recorded as running is left alone (its engine is at work, or was killed:
    ``docpipe resume`` takes it up)."""
    from docpipe.service.batches import continue_batch, run_batch

    ready = store.reviews.answered_batches()
    if batch_id is not None:
        batch_id = full_id(store, batch_id, "batch")
        if batch_id not in ready:
            raise Conflict(f"batch {batch_id} has no answered run waiting to continue", field="batch_id")
        ready = [batch_id]
    done = Continued()
    for bid in ready:
        batch = store.batch(bid)
        if batch is not None and batch["status"] == Status.RUNNING:
            done.skipped[bid] = "it is recorded as running (resume it with `docpipe resume` if its process died)"
            continue
        done.outcomes.append(run_batch(store, continue_batch(store, bid, registry), options, on_document))
    return done


@dataclass
class ReviewExport:
    """What :func:`export_reviews` found: one example per answered task whose text it could
    read, and the tasks it skipped (``{"task", "document", "why"}``)."""

    examples: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def export_reviews(store: Store, *, flow: str, kind: str = "choose", key: str = "doc_class",
                   text_key: str = "full_text") -> ReviewExport:
    """The answered review tasks of flow ``flow`` and kind ``kind`` that review ``key``, as
    training examples (oldest answer first), one per task::

        {"text", "model_label", "model_score", "human_label", "reviewer", "answered_at",
         "document", "run_id", "task_id", "step", "key"}

    ``text`` is ``text_key`` as the run recorded it for the step that wrote ``key`` (the
    text the model classified: for ``hf.classify``, ``full_text``): the last succeeded task
    of the run before that step's task that wrote ``text_key``. ``model_label`` (and its
    ``<key>_score``) come from the task's proposal, ``human_label`` from its answer. A task
    whose run has no recorded ``text_key`` (a run deleted, or a text that was never
    recorded) is skipped, and said in ``skipped``."""
    if kind not in ("choose", "edit", "approve"):
        raise ServiceError("kind must be one of choose, edit, approve", field="kind")
    done = ReviewExport()
    for task in store.reviews.answered(flow=flow, kind=kind):
        if key not in task["keys"]:
            continue
        text, why = _reviewed_text(store, task, key, text_key)
        if text is None:
            done.skipped.append({"task": task["id"], "document": task["document"], "why": why})
            continue
        proposal = task["proposal"] or {}
        done.examples.append({
            "text": text, "model_label": proposal.get(key), "model_score": proposal.get(f"{key}_score"),
            "human_label": (task["answer"] or {}).get(key), "reviewer": task["answered_by"],
            "answered_at": task["answered_at"], "document": task["document"], "run_id": task["flow_run_id"],
            "task_id": task["id"], "step": task["step"], "key": key,
        })
    return done


def _reviewed_text(store: Store, task: dict[str, Any], key: str, text_key: str) -> tuple[str | None, str]:
    """``(text_key as the run recorded it before the step that wrote key, "")``, or
    ``(None, why not)``."""
    run = store.get_run(task["flow_run_id"])
    if run is None:
        return None, "its run is not recorded"
    done = [t for t in run["tasks"] if t["status"] == Status.SUCCEEDED and t["step"] != task["step"]
            and isinstance(t["outputs"], dict)]
    writers = [i for i, t in enumerate(done) if key in t["outputs"]]
    before = done[:writers[-1] + 1] if writers else done
    texts = [t["outputs"][text_key] for t in before if isinstance(t["outputs"].get(text_key), str)]
    if not texts:
        return None, f"its run recorded no '{text_key}'"
    return texts[-1], ""


def _reviewer(reviewer: str) -> str:
    name = (reviewer or "").strip()
    if not name or len(name) > 255:
        raise ServiceError("give the reviewer's name (1 to 255 characters)", field="reviewer")
    return name


def _yes_no(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _YES or text in _NO:
        return text in _YES
    raise ServiceError("answer approve (true, yes) or reject (false, no)", field="answer")


def _state(task: dict[str, Any]) -> str:
    """``answered by ann``, ``claimed by bob until 12:03:04``, ``waiting``."""
    if task["status"] == ReviewStatus.ANSWERED:
        return f"answered by {task['answered_by']}"
    if task["status"] == ReviewStatus.CLAIMED:
        until = dt.datetime.fromtimestamp(task["lease_expires_at"]).strftime("%H:%M:%S")
        return f"claimed by {task['lease_owner']} until {until}"
    return str(task["status"])


def _taken(task: dict[str, Any]) -> str:
    return f"review task {task['id']} is {_state(task)}"
