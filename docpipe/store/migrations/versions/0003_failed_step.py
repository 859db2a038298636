"""The step a failed run failed at, on the run's row (result files and ``runs list`` show it).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add ``flow_runs.failed_step`` (existing rows: NULL)."""
    op.add_column("flow_runs", sa.Column("failed_step", sa.String(255)))


def downgrade() -> None:
    op.drop_column("flow_runs", "failed_step")
