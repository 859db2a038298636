"""The exact bytes of input names that are not valid UTF-8 (``batch_inputs.document_raw``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add ``batch_inputs.document_raw`` (existing rows: NULL, their names were UTF-8)."""
    op.add_column("batch_inputs", sa.Column("document_raw", sa.Text))


def downgrade() -> None:
    op.drop_column("batch_inputs", "document_raw")
