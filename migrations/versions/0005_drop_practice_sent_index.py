"""Drop the index of texts by practice and send time, which nothing reads

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28

The daily send cap counted a practice's texts of the day through this index until 0004
moved the count to practice_send_counts. Since then it has had no reader, yet every text
written, claimed and answered still updated it.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_messages_practice_sent", table_name="messages")


def downgrade() -> None:
    op.create_index(
        "ix_messages_practice_sent", "messages", ["practice_id", "sent_at"], unique=False
    )
