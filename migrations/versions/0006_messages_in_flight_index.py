"""Index the texts on the wire (claimed, or their outcome unknown) by practice

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28

The daily send cap counts, besides the day's accepted texts, the practice's texts that
other workers have claimed and not settled, so that workers sending at once cannot pass the
cap together. Only texts in flight are in the index: a few rows, whatever the backlog.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

IN_FLIGHT = "status IN ('claimed', 'unknown')"


def upgrade() -> None:
    op.create_index(
        "ix_messages_in_flight",
        "messages",
        ["practice_id", "claimed_at"],
        unique=False,
        postgresql_where=sa.text(IN_FLIGHT),
        sqlite_where=sa.text(IN_FLIGHT),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_in_flight", table_name="messages")
