"""Inbound email archive and the Message-IDs that thread emails to tickets.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UUID = postgresql.UUID(as_uuid=True)
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "inbound_emails",
        sa.Column("id", UUID, nullable=False),
        sa.Column("message_id", sa.String(998), nullable=True),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("ticket_id", UUID, nullable=True),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_inbound_emails"),
    )
    op.create_index("ix_inbound_emails_message_id", "inbound_emails", ["message_id"])
    op.create_table(
        "email_thread_ids",
        sa.Column("message_id", sa.String(998), nullable=False),
        sa.Column("ticket_id", UUID, nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], name="fk_email_thread_ids_ticket_id_tickets"),
        sa.PrimaryKeyConstraint("message_id", name="pk_email_thread_ids"),
    )
    op.create_index("ix_email_thread_ids_ticket_id", "email_thread_ids", ["ticket_id"])


def downgrade() -> None:
    op.drop_table("email_thread_ids")
    op.drop_table("inbound_emails")
