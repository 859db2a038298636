"""The run-record schema: eight tables on SQLAlchemy Core, portable to PostgreSQL.

* ``flows`` — flow definitions, one row per (name, version, content hash).
* ``batches`` — one row per ``docpipe run`` invocation (a run group).
* ``batch_inputs`` — the documents a batch was given, in order.
* ``flow_runs`` — one row per document run through a flow; ``seq`` is the
  insertion order, ``id`` the engine's run id, ``attempt`` 1 plus the times it
  was resumed.
* ``task_runs`` — one row per attempt of a step on a document, with the state
  keys it wrote (``outputs``).
* ``review_tasks`` — one row per review step a run reached: what a person is asked,
  the model's proposal, the lease of the reviewer who claimed it, the answer.
* ``jobs`` — the work a server (or several, on one PostgreSQL) is asked to do: a
  document to run through a flow, a batch to run, retry, resume or continue; claimed
  with a lease, so a server that dies lets another take its jobs (docs/service.md).
* ``deliveries`` — the outbox: one row per finished run and output sink, delivered
  at least once and recorded once (docs/service.md).

Timestamps are float epoch seconds (``time.time()``). JSON payloads
(definitions, params, counts, outputs) are stored as text the store encodes and
decodes itself, so bulk writes need no per-row type processing; large values in
outputs are blob references (:mod:`docpipe.blobs`).

This module is the current schema. The database follows it through the Alembic
migrations in ``docpipe/store/migrations``: a change here needs a new revision
there (``tests/store/test_store_migrations.py`` checks that they agree).
"""

from __future__ import annotations

import sqlalchemy as sa

#: An autoincrement key: BIGINT (BIGSERIAL) on PostgreSQL, INTEGER on SQLite,
#: where only ``INTEGER PRIMARY KEY`` is an alias of the rowid.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

flows = sa.Table(
    "flows",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("content_hash", sa.String(128), nullable=False),
    sa.Column("definition", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.UniqueConstraint("name", "version", "content_hash", name="uq_flows_name_version_hash"),
)

batches = sa.Table(
    "batches",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("flow_id", BigId, sa.ForeignKey("flows.id"), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("params", sa.Text),
    sa.Column("argv", sa.Text),
    sa.Column("n_inputs", sa.Integer, nullable=False),
    sa.Column("counts", sa.Text),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("finished_at", sa.Double),
    sa.Column("correlation_id", sa.String(255)),
    #: JSON: the subflow definitions the batch started with, by the path its flow names
    sa.Column("subflows", sa.Text),
    sa.Index("ix_batches_correlation_id", "correlation_id"),
)

batch_inputs = sa.Table(
    "batch_inputs",
    metadata,
    sa.Column("batch_id", sa.String(64), sa.ForeignKey("batches.id"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    #: the name as text (undecodable bytes of a file name as ``\xff``: see docpipe.inputs)
    sa.Column("document", sa.Text, nullable=False),
    #: the name's exact bytes (base64) when ``document`` is not them, else NULL
    sa.Column("document_raw", sa.Text),
    #: the document's own correlation id (a source's, ``--correlation-id-from``), else NULL
    sa.Column("correlation_id", sa.String(255)),
)

flow_runs = sa.Table(
    "flow_runs",
    metadata,
    sa.Column("seq", BigId, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("batch_id", sa.String(64), sa.ForeignKey("batches.id"), nullable=False),
    sa.Column("flow_id", BigId, sa.ForeignKey("flows.id"), nullable=False),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("error_kind", sa.String(64)),
    sa.Column("error", sa.Text),
    sa.Column("outputs", sa.Text),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("finished_at", sa.Double),
    sa.Column("correlation_id", sa.String(255)),
    sa.Column("attempt", sa.Integer, nullable=False, server_default=sa.text("1")),
    #: the step a failed run failed at (``ocr[3]``, ``sub/text`` for map items and subflows)
    sa.Column("failed_step", sa.String(255)),
    #: the run this one re-ran from a step (``docpipe runs rerun``), else NULL
    sa.Column("rerun_of", sa.String(64)),
    sa.Index("ix_flow_runs_status", "status"),
    sa.Index("ix_flow_runs_batch_id", "batch_id"),
    sa.Index("ix_flow_runs_started_at", "started_at"),
    sa.Index("ix_flow_runs_correlation_id", "correlation_id"),
)

# No foreign key on flow_run_id: task runs are the bulk of all writes and a
# per-row constraint check on PostgreSQL would cost more than it protects.
task_runs = sa.Table(
    "task_runs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("flow_run_id", sa.String(64), nullable=False),
    sa.Column("step", sa.String(255), nullable=False),
    sa.Column("block", sa.String(255)),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("started_at", sa.Double),
    sa.Column("finished_at", sa.Double),
    sa.Column("worker", sa.String(64)),
    sa.Column("error_kind", sa.String(64)),
    sa.Column("error", sa.Text),
    sa.Column("traceback", sa.Text),
    sa.Column("outputs", sa.Text),
    #: JSON: what produced the outputs (block and version, distribution, model, params hash)
    sa.Column("provenance", sa.Text),
    #: hash of (block version, model, params, inputs): an equal key may reuse the outputs
    sa.Column("cache_key", sa.String(64)),
    sa.Index("ix_task_runs_flow_run_id", "flow_run_id"),
    sa.Index("ix_task_runs_cache_key", "cache_key"),
)

# One task per run and review step: a run that reaches the step again (after a crash, before
# its waiting status was written) does not ask twice.
review_tasks = sa.Table(
    "review_tasks",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("flow_run_id", sa.String(64), nullable=False),
    sa.Column("batch_id", sa.String(64)),
    sa.Column("step", sa.String(255), nullable=False),
    #: choose | edit | approve
    sa.Column("kind", sa.String(32), nullable=False),
    #: JSON: the keys the answer writes
    sa.Column("keys", sa.Text, nullable=False),
    sa.Column("prompt", sa.Text),
    #: JSON: the choices offered (``choose``), else ``[]``
    sa.Column("choices", sa.Text, nullable=False),
    #: JSON: the model's values of the keys, its score and top-k (blob references if large)
    sa.Column("proposal", sa.Text),
    #: waiting | claimed | answered
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("lease_owner", sa.String(255)),
    sa.Column("lease_expires_at", sa.Double),
    #: JSON: the values the answer wrote, by key
    sa.Column("answer", sa.Text),
    sa.Column("answered_by", sa.String(255)),
    sa.Column("answered_at", sa.Double),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.UniqueConstraint("flow_run_id", "step", name="uq_review_tasks_run_step"),
    sa.Index("ix_review_tasks_status", "status"),
    sa.Index("ix_review_tasks_batch_id", "batch_id"),
)

# One row per unit of work a server runs. A document job carries its run id from the start
# (given to the client at once; a server that takes over a dead one's job resumes that run).
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    #: document | run | retry | resume | continue
    sa.Column("kind", sa.String(32), nullable=False),
    #: the flow's name (or path) as the server resolves it
    sa.Column("flow", sa.String(1024), nullable=False),
    sa.Column("batch_id", sa.String(64)),
    sa.Column("run_id", sa.String(64)),
    #: a document job's path
    sa.Column("document", sa.Text),
    #: JSON: the run's params (secrets never stored), a retry's documents
    sa.Column("payload", sa.Text),
    #: where the job came from: api, ui, watch:<folder>, a plugin source's name
    sa.Column("source", sa.String(255), nullable=False),
    #: the source's key for it (a client's Idempotency-Key, a file's path+size+mtime)
    sa.Column("idempotency_key", sa.String(512)),
    sa.Column("correlation_id", sa.String(255)),
    #: queued | running | finished | error (docpipe.status.JobStatus)
    sa.Column("status", sa.String(32), nullable=False),
    #: a finished document job's run status (succeeded | failed | waiting)
    sa.Column("outcome", sa.String(32)),
    sa.Column("error", sa.Text),
    sa.Column("lease_owner", sa.String(255)),
    sa.Column("lease_expires_at", sa.Double),
    #: how many times a server took it (more than 1: a server died holding it)
    sa.Column("claims", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("started_at", sa.Double),
    sa.Column("finished_at", sa.Double),
    sa.UniqueConstraint("source", "idempotency_key", name="uq_jobs_source_key"),
    sa.Index("ix_jobs_status", "status", "kind", "created_at"),  # a claim reads only the oldest it takes
    sa.Index("ix_jobs_batch_id", "batch_id"),
    sa.Index("ix_jobs_run_id", "run_id"),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("sink", sa.String(255), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    #: pending | delivered | dead (docpipe.status.DeliveryStatus)
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("next_attempt_at", sa.Double, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("lease_owner", sa.String(255)),
    sa.Column("lease_expires_at", sa.Double),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("delivered_at", sa.Double),
    sa.UniqueConstraint("sink", "run_id", name="uq_deliveries_sink_run"),
    sa.Index("ix_deliveries_status_next", "status", "next_attempt_at"),
)
