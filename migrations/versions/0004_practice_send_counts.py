"""Per-practice daily count of texts sent, for the daily send cap

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "practice_send_counts",
        sa.Column(
            "practice_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["practice_id"],
            ["practices.id"],
            name=op.f("fk_practice_send_counts_practice_id_practices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("practice_id", "day", name=op.f("pk_practice_send_counts")),
    )
    _count_recent_texts()


def _count_recent_texts() -> None:
    """Today's count for texts sent before this revision (only today's and yesterday's
    matter to the cap; the practice's day is counted in its own time zone)."""
    bind = op.get_bind()
    zones = {
        row.id: ZoneInfo(row.timezone)
        for row in bind.execute(sa.text("SELECT id, timezone FROM practices"))
    }
    since = datetime.now(UTC) - timedelta(days=2)
    counts: Counter[tuple[int, date]] = Counter()
    rows = bind.execute(
        sa.text(
            "SELECT practice_id, sent_at FROM messages "
            "WHERE sent_at IS NOT NULL AND kind <> 'reply' AND sent_at >= :since"
        ),
        {"since": since if bind.dialect.name == "postgresql" else since.replace(tzinfo=None)},
    )
    for practice_id, sent_at in rows:
        if isinstance(sent_at, str):  # SQLite keeps naive UTC text
            sent_at = datetime.fromisoformat(sent_at)
        if sent_at.tzinfo is None:
            sent_at = sent_at.replace(tzinfo=UTC)
        counts[(practice_id, sent_at.astimezone(zones[practice_id]).date())] += 1
    if counts:
        table = sa.table(
            "practice_send_counts",
            sa.column("practice_id", sa.Integer),
            sa.column("day", sa.Date),
            sa.column("sent", sa.Integer),
        )
        op.bulk_insert(
            table,
            [{"practice_id": p, "day": d, "sent": n} for (p, d), n in sorted(counts.items())],
        )


def downgrade() -> None:
    op.drop_table("practice_send_counts")
