"""Count the failures of a follow-up step's job

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28

A step whose job kept failing (a bug, bad data) was offered again every 30 seconds for
good. Its failures are now counted: the pauses between offers grow, and after the last
one the task's cadence stops and a person calls.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "followups", sa.Column("failures", sa.Integer(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    with op.batch_alter_table("followups") as batch:  # SQLite rebuilds the table
        batch.drop_column("failures")
