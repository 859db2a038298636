"""The service: ``jobs`` (leased work) and ``deliveries`` (the sinks' outbox); provenance and
reuse keys on ``task_runs``; ``flow_runs.rerun_of``; ``batches.subflows``;
``batch_inputs.correlation_id``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """New nullable columns (instant on PostgreSQL, whatever the table's size) and two new tables."""
    with op.batch_alter_table("task_runs") as t:
        t.add_column(sa.Column("provenance", sa.Text))
        t.add_column(sa.Column("cache_key", sa.String(64)))
    op.create_index("ix_task_runs_cache_key", "task_runs", ["cache_key"])
    with op.batch_alter_table("flow_runs") as t:
        t.add_column(sa.Column("rerun_of", sa.String(64)))
    with op.batch_alter_table("batches") as t:
        t.add_column(sa.Column("subflows", sa.Text))
    with op.batch_alter_table("batch_inputs") as t:
        t.add_column(sa.Column("correlation_id", sa.String(255)))
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("flow", sa.String(1024), nullable=False),
        sa.Column("batch_id", sa.String(64)),
        sa.Column("run_id", sa.String(64)),
        sa.Column("document", sa.Text),
        sa.Column("payload", sa.Text),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("idempotency_key", sa.String(512)),
        sa.Column("correlation_id", sa.String(255)),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(32)),
        sa.Column("error", sa.Text),
        sa.Column("lease_owner", sa.String(255)),
        sa.Column("lease_expires_at", sa.Double),
        sa.Column("claims", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("started_at", sa.Double),
        sa.Column("finished_at", sa.Double),
        sa.UniqueConstraint("source", "idempotency_key", name="uq_jobs_source_key"),
    )
    op.create_index("ix_jobs_status", "jobs", ["status", "kind", "created_at"])
    op.create_index("ix_jobs_batch_id", "jobs", ["batch_id"])
    op.create_index("ix_jobs_run_id", "jobs", ["run_id"])
    op.create_table(
        "deliveries",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("sink", sa.String(255), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", sa.Double, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("lease_owner", sa.String(255)),
        sa.Column("lease_expires_at", sa.Double),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("delivered_at", sa.Double),
        sa.UniqueConstraint("sink", "run_id", name="uq_deliveries_sink_run"),
    )
    op.create_index("ix_deliveries_status_next", "deliveries", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("deliveries")
    op.drop_table("jobs")
    with op.batch_alter_table("batch_inputs") as t:
        t.drop_column("correlation_id")
    with op.batch_alter_table("batches") as t:
        t.drop_column("subflows")
    with op.batch_alter_table("flow_runs") as t:
        t.drop_column("rerun_of")
    op.drop_index("ix_task_runs_cache_key", "task_runs")
    with op.batch_alter_table("task_runs") as t:
        t.drop_column("cache_key")
        t.drop_column("provenance")
