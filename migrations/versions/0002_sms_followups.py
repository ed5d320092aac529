"""SMS follow-ups: the outbox, cadences and their schedule, consent audit, scheduling links

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "sender_slots",
        sa.Column("number", sa.String(length=16), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_sender_slots")),
    )
    op.create_table(
        "cadences",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "practice_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column(
            "steps",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["practice_id"],
            ["practices.id"],
            name=op.f("fk_cadences_practice_id_practices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cadences")),
        sa.UniqueConstraint(
            "practice_id", "category", name=op.f("uq_cadences_practice_id_category")
        ),
    )
    op.create_table(
        "consent_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("message_sid", sa.String(length=64), nullable=True),
        sa.Column("task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_consent_changes_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_consent_changes_task_id_tasks"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_changes")),
    )
    op.create_index(
        op.f("ix_consent_changes_contact_id"), "consent_changes", ["contact_id"], unique=False
    )
    op.create_table(
        "followups",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("template", sa.String(length=32), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_followups_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_followups")),
        sa.UniqueConstraint("task_id", "step", name=op.f("uq_followups_task_id_step")),
    )
    op.create_index(
        "ix_followups_due",
        "followups",
        ["due_at"],
        unique=False,
        postgresql_where=sa.text("state = 'pending'"),
        sqlite_where=sa.text("state = 'pending'"),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "practice_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("dedupe_key", sa.String(length=100), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("to_number", sa.String(length=16), nullable=False),
        sa.Column("from_number", sa.String(length=16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("segments", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("defer_reason", sa.String(length=200), nullable=True),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("slot_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("message_sid", sa.String(length=64), nullable=True),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_messages_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["practice_id"],
            ["practices.id"],
            name=op.f("fk_messages_practice_id_practices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_messages_task_id_tasks"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_messages_dedupe_key")),
        sa.UniqueConstraint("message_sid", name=op.f("uq_messages_message_sid")),
    )
    op.create_index(
        "ix_messages_contact_created", "messages", ["contact_id", "created_at"], unique=False
    )
    op.create_index(
        "ix_messages_due",
        "messages",
        ["not_before"],
        unique=False,
        postgresql_where=sa.text("status IN ('pending', 'claimed', 'unknown')"),
        sqlite_where=sa.text("status IN ('pending', 'claimed', 'unknown')"),
    )
    op.create_index(
        "ix_messages_practice_sent", "messages", ["practice_id", "sent_at"], unique=False
    )
    op.create_index("ix_messages_task", "messages", ["task_id"], unique=False)
    op.create_table(
        "links",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "practice_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opens", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=True),
        sa.Column("action_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_links_message_id_messages"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["practice_id"],
            ["practices.id"],
            name=op.f("fk_links_practice_id_practices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_links_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_links_token_hash")),
    )
    op.create_index(op.f("ix_links_task_id"), "links", ["task_id"], unique=False)
    op.add_column("contacts", sa.Column("state", sa.String(length=2), nullable=True))
    op.add_column("contacts", sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "contacts", sa.Column("sms_undeliverable_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "practices",
        sa.Column(
            "texting_hours",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
    )
    op.add_column(
        "practices", sa.Column("daily_send_cap", sa.Integer(), nullable=False, server_default="500")
    )
    op.add_column(
        "tasks", sa.Column("cadence_stopped_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("tasks", sa.Column("cadence_stop_reason", sa.String(length=32), nullable=True))
    op.add_column("tasks", sa.Column("flag", sa.String(length=32), nullable=True))


def downgrade() -> None:

    op.drop_column("tasks", "flag")
    op.drop_column("tasks", "cadence_stop_reason")
    op.drop_column("tasks", "cadence_stopped_at")
    op.drop_column("practices", "daily_send_cap")
    op.drop_column("practices", "texting_hours")
    op.drop_column("contacts", "sms_undeliverable_at")
    op.drop_column("contacts", "opted_out_at")
    op.drop_column("contacts", "state")
    op.drop_index(op.f("ix_links_task_id"), table_name="links")
    op.drop_table("links")
    op.drop_index("ix_messages_task", table_name="messages")
    op.drop_index("ix_messages_practice_sent", table_name="messages")
    op.drop_index(
        "ix_messages_due",
        table_name="messages",
        postgresql_where=sa.text("status IN ('pending', 'claimed', 'unknown')"),
        sqlite_where=sa.text("status IN ('pending', 'claimed', 'unknown')"),
    )
    op.drop_index("ix_messages_contact_created", table_name="messages")
    op.drop_table("messages")
    op.drop_index(
        "ix_followups_due",
        table_name="followups",
        postgresql_where=sa.text("state = 'pending'"),
        sqlite_where=sa.text("state = 'pending'"),
    )
    op.drop_table("followups")
    op.drop_index(op.f("ix_consent_changes_contact_id"), table_name="consent_changes")
    op.drop_table("consent_changes")
    op.drop_table("cadences")
    op.drop_table("sender_slots")
