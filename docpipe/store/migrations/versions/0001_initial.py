"""The schema docpipe created before migrations: flows, batches, flow runs, task runs.

A database made by that docpipe (``metadata.create_all``, no ``alembic_version``
table) is exactly this revision: the store stamps it ``0001`` and upgrades it.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the four tables."""
    op.create_table(
        "flows",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("content_hash", sa.String(128), nullable=False),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.UniqueConstraint("name", "version", "content_hash", name="uq_flows_name_version_hash"),
    )
    op.create_table(
        "batches",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("flow_id", BigId, sa.ForeignKey("flows.id"), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("params", sa.Text),
        sa.Column("argv", sa.Text),
        sa.Column("n_inputs", sa.Integer, nullable=False),
        sa.Column("counts", sa.Text),
        sa.Column("started_at", sa.Double, nullable=False),
        sa.Column("finished_at", sa.Double),
    )
    op.create_table(
        "flow_runs",
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
    )
    op.create_index("ix_flow_runs_status", "flow_runs", ["status"])
    op.create_index("ix_flow_runs_batch_id", "flow_runs", ["batch_id"])
    op.create_index("ix_flow_runs_started_at", "flow_runs", ["started_at"])
    op.create_table(
        "task_runs",
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
    )
    op.create_index("ix_task_runs_flow_run_id", "task_runs", ["flow_run_id"])


def downgrade() -> None:
    """Drop the four tables."""
    op.drop_table("task_runs")
    op.drop_table("flow_runs")
    op.drop_table("batches")
    op.drop_table("flows")
