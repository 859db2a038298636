"""Durable runs: batch inputs, correlation ids, flow-run attempts, task outputs.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add ``batch_inputs`` and the new columns (existing rows: attempt 1, the rest NULL)."""
    op.add_column("batches", sa.Column("correlation_id", sa.String(255)))
    op.create_index("ix_batches_correlation_id", "batches", ["correlation_id"])
    op.create_table(
        "batch_inputs",
        sa.Column("batch_id", sa.String(64), sa.ForeignKey("batches.id"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("document", sa.Text, nullable=False),
    )
    op.add_column("flow_runs", sa.Column("correlation_id", sa.String(255)))
    op.add_column("flow_runs", sa.Column("attempt", sa.Integer, nullable=False, server_default=sa.text("1")))
    op.create_index("ix_flow_runs_correlation_id", "flow_runs", ["correlation_id"])
    op.add_column("task_runs", sa.Column("outputs", sa.Text))


def downgrade() -> None:
    """Remove what :func:`upgrade` added (SQLite drops columns since 3.35)."""
    op.drop_column("task_runs", "outputs")
    op.drop_index("ix_flow_runs_correlation_id", "flow_runs")
    op.drop_column("flow_runs", "attempt")
    op.drop_column("flow_runs", "correlation_id")
    op.drop_table("batch_inputs")
    op.drop_index("ix_batches_correlation_id", "batches")
    op.drop_column("batches", "correlation_id")
