"""Deliveries of approved answers, email Message-IDs on messages, channel callback URLs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UUID = postgresql.UUID(as_uuid=True)
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("tickets", sa.Column("callback_url", sa.String(2048), nullable=True))
    op.add_column("messages", sa.Column("email_message_id", sa.String(998), nullable=True))
    op.create_index("ix_messages_email_message_id", "messages", ["email_message_id"])
    op.create_table(
        "deliveries",
        sa.Column("id", UUID, nullable=False),
        sa.Column("ticket_id", UUID, nullable=False),
        sa.Column("message_id", UUID, nullable=False),
        sa.Column("answer_id", UUID, nullable=False),
        sa.Column("answer_version", sa.Integer(), nullable=False),
        sa.Column("agent_id", UUID, nullable=True),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TIMESTAMP, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], name="fk_deliveries_ticket_id_tickets"),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], name="fk_deliveries_message_id_messages"),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
    )
    op.create_index("ix_deliveries_ticket_id", "deliveries", ["ticket_id"])
    op.create_index(
        "ix_deliveries_due", "deliveries", ["next_attempt_at"], postgresql_where=sa.text("status = 'pending'")
    )


def downgrade() -> None:
    op.drop_table("deliveries")
    op.drop_index("ix_messages_email_message_id", table_name="messages")
    op.drop_column("messages", "email_message_id")
    op.drop_column("tickets", "callback_url")
