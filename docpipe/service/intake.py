"""Intake: documents handed to a server become queued ``document`` jobs in the store, one
batch per submission, whatever brought them (the HTTP API, a watched folder, a plugin
source). The server's runner claims the jobs and runs them (:func:`plan_job` gives it the
plan a job was submitted with).

Also here, because the CLI needs them as much as the sources do: the correlation id of a
document taken from its file name or from its sidecar file (:func:`correlation_for`).

A submission is idempotent by key: the same key from the same source returns the earlier
submission (``repeated``), also when two identical requests race, on SQLite and on
PostgreSQL (the ``jobs`` table's ``UNIQUE(source, idempotency_key)`` decides).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from docpipe.flow import redact_params
from docpipe.service.errors import Conflict, NotFound, ServiceError
from docpipe.service.plans import plan_definition, plan_flow, record_flow

if TYPE_CHECKING:
    from docpipe.planner import Plan
    from docpipe.plugins import Registry
    from docpipe.store import Store

#: how a document's correlation id is found: none, its file's stem, its sidecar's ``correlation_id``
CorrelationFrom = Literal["none", "name", "sidecar"]
CORRELATION_FROM: tuple[str, ...] = ("none", "name", "sidecar")
#: the suffix of a document's sidecar file: ``a.pdf`` → ``a.pdf.meta.json``
SIDECAR = ".meta.json"
#: the longest correlation id (the column's width)
MAX_CORRELATION = 255
#: the longest idempotency key a client may give (a job's key column holds 512: ``KEY#n``)
MAX_KEY = 200
#: the largest sidecar file read
MAX_SIDECAR_BYTES = 64 * 1024


class BadSidecar(ServiceError):
    """A document's sidecar file that is not a JSON object with a string ``correlation_id``."""

    def __init__(self, path: str | Path, why: str) -> None:
        super().__init__(f"sidecar {path}: {why}", field="sidecar")
        self.path = str(path)


def sidecar_of(path: str | Path) -> Path:
    """The sidecar file of document ``path``: ``<path>.meta.json``."""
    p = Path(path)
    return p.with_name(p.name + SIDECAR)


def correlation_for(path: str | Path, how: str) -> str | None:
    """The correlation id of document ``path``: ``none`` → None; ``name`` → the file's stem
    (``INV-7.pdf`` → ``INV-7``); ``sidecar`` → the ``correlation_id`` of ``<path>.meta.json``
    (None when there is no sidecar or it has no ``correlation_id``). :class:`BadSidecar` for a
    sidecar that cannot be read, is not a JSON object or holds a ``correlation_id`` that is not
    a string of at most 255 characters; :class:`ServiceError` for an unknown ``how``."""
    if how == "none":
        return None
    if how == "name":
        return Path(path).stem[:MAX_CORRELATION] or None
    if how != "sidecar":
        raise ServiceError(f"correlation ids come from one of {', '.join(CORRELATION_FROM)}, not {how!r}",
                           field="correlation_from")
    side = sidecar_of(path)
    try:
        with open(side, "rb") as f:
            raw = f.read(MAX_SIDECAR_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadSidecar(side, f"cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_SIDECAR_BYTES:
        raise BadSidecar(side, f"larger than {MAX_SIDECAR_BYTES // 1024} KiB")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadSidecar(side, f"not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise BadSidecar(side, "not a JSON object")
    value = meta.get("correlation_id")
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_CORRELATION:
        raise BadSidecar(side, f"correlation_id must be a non-empty string of at most {MAX_CORRELATION} "
                               f"characters, not {json.dumps(value)[:40]}")
    return value


@dataclass(frozen=True)
class Submission:
    """What a submission queued: its batch, its jobs (rows of ``store.jobs``, in document
    order) and whether it repeats an earlier one (``repeated``: nothing new was queued)."""

    batch_id: str
    jobs: list[dict[str, Any]] = field(default_factory=list)
    repeated: bool = False

    def as_dict(self) -> dict[str, Any]:
        """``{"batch_id", "repeated", "runs": [{"run_id", "job_id", "document"}]}``."""
        return {"batch_id": self.batch_id, "repeated": self.repeated,
                "runs": [{"run_id": j["run_id"], "job_id": j["id"], "document": j["document"]}
                         for j in self.jobs]}


def resolve_flow(store: Store, flow: str, registry: Registry, params: Mapping[str, Any] | None = None,
                 *, files: bool = True) -> tuple[Plan, str | None]:
    """The plan of ``flow`` and the flow file it came from (None: a recorded flow).

    With ``files`` (a source the server's operator configured) ``flow`` is a flow file's path,
    or a name of ``flows/`` (``idp`` → ``flows/idp.json``); either way, else (and always
    without ``files``: a client's request names no server path) the newest recorded flow of
    that name. :class:`NotFound` when there is none; :class:`~docpipe.errors.FlowError` for an
    invalid flow or params; :class:`~docpipe.service.SecretsNeeded` for a recorded flow whose
    secret defaults were masked."""
    if files:
        for candidate in (Path(flow), Path("flows") / f"{flow}.json"):
            if candidate.is_file():
                path = str(candidate.resolve())
                return plan_flow(path, registry, params), path
    found = store.get_flow(flow)
    if found is None:
        where = "no flow file and " if files else ""
        raise NotFound(f"{where}no recorded flow {flow}", field="flow")
    return plan_definition(found["definition"], registry, params), None


def _payload(job: Mapping[str, Any]) -> dict[str, Any]:
    raw = job.get("payload")
    value = json.loads(raw) if isinstance(raw, str) else raw
    return dict(value or {})


def plan_job(store: Store, job: Mapping[str, Any], registry: Registry) -> Plan:
    """The plan a ``document`` job was submitted with: the flow version recorded then (by its
    content hash) with the job's params, so editing a flow file never changes a queued job;
    the flow file itself when the record cannot serve (its secret defaults were masked)."""
    payload = _payload(job)
    params = payload.get("params") or {}
    name, content_hash, path = payload.get("flow_name"), payload.get("content_hash"), payload.get("flow_path")
    found = store.get_flow(name, content_hash=content_hash) if name and content_hash else None
    if found is not None:
        masked = [k for k, v in (found["definition"].get("params") or {}).items() if v == "***"]
        if not (masked and path):
            return plan_definition(found["definition"], registry, params)
    if path:
        return plan_flow(path, registry, params)
    return resolve_flow(store, str(job["flow"]), registry, params, files=False)[0]


def _check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    given = dict(params)
    redacted = redact_params(given)
    secret = sorted(k for k in given if redacted[k] != given[k])
    if secret:
        raise ServiceError(f"params {', '.join(secret)} look secret; a queued job never stores secrets: "
                           "set them as the flow's defaults in the server's flow file", field="params")
    return given


def _same_flow(job: Mapping[str, Any], flow: str) -> bool:
    """Whether ``flow``, as a request names it, is the flow ``job`` was submitted to."""
    if flow in (job["flow"], _payload(job).get("flow_name")):
        return True
    return any(str(p.resolve()) == job["flow"] for p in (Path(flow), Path("flows") / f"{flow}.json"))


def _read_back(store: Store, first: Mapping[str, Any], flow: str) -> Submission:
    if not _same_flow(first, flow):
        raise Conflict(f"idempotency key {first['idempotency_key']!r} was used for flow {first['flow']}",
                       field="key")
    batch_id = str(first["batch_id"])
    jobs = store.jobs.list(batch_id=batch_id, limit=100_000)
    jobs.sort(key=lambda j: _payload(j).get("seq", 0))
    return Submission(batch_id, jobs, repeated=True)


def submit_documents(store: Store, flow: str, documents: Sequence[tuple[str, str | None]], *,
                     registry: Registry, source: str, key: str | None = None,
                     keys: Sequence[str] | None = None, params: Mapping[str, Any] | None = None,
                     files: bool = True) -> Submission:
    """Queue ``documents`` ((path, correlation id)) through ``flow`` as one new batch: one
    ``document`` job each, with its own run id, in one transaction.

    The flow and ``params`` are checked first (see :func:`resolve_flow`; ``files`` as there),
    so nothing is queued for an unknown flow or bad params; params whose names look secret
    are refused (a job's params are stored). ``key`` makes the submission idempotent for
    ``source``: its first job gets ``key``, the others ``KEY#i``, and a key already used
    returns that earlier submission (``repeated``). ``keys`` instead gives each document its
    own key (a watched folder's files): a document whose key was used gets its earlier job
    back, the others are queued; ``repeated`` when none was new.
    """
    if key is not None and keys is not None:
        raise ServiceError("give key or keys, not both", field="key")
    if keys is not None and len(keys) != len(documents):
        raise ServiceError(f"{len(keys)} keys for {len(documents)} documents", field="key")
    if key is not None and not (0 < len(key) <= MAX_KEY):
        raise ServiceError(f"an idempotency key has 1 to {MAX_KEY} characters", field="key")
    given = _check_params(params or {})
    if key is not None:  # a repeat queues nothing and plans nothing
        earlier = store.jobs.by_key(source, key)
        if earlier is not None:
            return _read_back(store, earlier, flow)
    if not documents:
        raise ServiceError("no documents to submit", field="documents")
    plan, path = resolve_flow(store, flow, registry, given, files=files)
    record_flow(store, plan)  # the version the jobs run, whatever happens to the file
    from docpipe.store import new_id

    batch_id = new_id()
    pinned = {"flow_name": plan.name, "version": plan.version, "content_hash": plan.content_hash,
              "flow_path": path}
    rows = [dict(kind="document", flow=path or plan.name, source=source, document=str(doc),
                 batch_id=batch_id, run_id=new_id(), correlation_id=corr,
                 payload={"params": given, "n": len(documents), "seq": i, **pinned},
                 key=(keys[i] if keys is not None else key if i == 0 or key is None else f"{key}#{i}"))
            for i, (doc, corr) in enumerate(documents)]
    done = store.jobs.submit_many(rows)
    if key is not None and not done[0][1]:  # an identical request raced this one and won
        return _read_back(store, done[0][0], flow)
    return Submission(batch_id, [row for row, _ in done], repeated=not any(new for _, new in done))
