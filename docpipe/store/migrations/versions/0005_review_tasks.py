"""Review tasks: a run waits at a review step for a person's answer (``review_tasks``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create ``review_tasks`` (no run waited before: it starts empty)."""
    op.create_table(
        "review_tasks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("flow_run_id", sa.String(64), nullable=False),
        sa.Column("batch_id", sa.String(64)),
        sa.Column("step", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("keys", sa.Text, nullable=False),
        sa.Column("prompt", sa.Text),
        sa.Column("choices", sa.Text, nullable=False),
        sa.Column("proposal", sa.Text),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("lease_owner", sa.String(255)),
        sa.Column("lease_expires_at", sa.Double),
        sa.Column("answer", sa.Text),
        sa.Column("answered_by", sa.String(255)),
        sa.Column("answered_at", sa.Double),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.UniqueConstraint("flow_run_id", "step", name="uq_review_tasks_run_step"),
    )
    op.create_index("ix_review_tasks_status", "review_tasks", ["status"])
    op.create_index("ix_review_tasks_batch_id", "review_tasks", ["batch_id"])


def downgrade() -> None:
    op.drop_table("review_tasks")
