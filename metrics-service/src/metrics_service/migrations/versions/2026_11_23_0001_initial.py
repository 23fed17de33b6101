"""Ticket facts, outbox and inbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from helpdesk_shared.chassis.migrations import create_messaging_tables_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_messaging_tables_v1()
    op.create_table(
        "ticket_facts",
        sa.Column("ticket_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("channel", sa.String(20), nullable=True),
        sa.Column("kind", sa.String(30), nullable=True),
        sa.Column("priority", sa.String(10), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("agent_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_ticket_facts"),
    )
    op.create_index("ix_ticket_facts_created_at", "ticket_facts", ["created_at"])
    op.create_index("ix_ticket_facts_agent_id", "ticket_facts", ["agent_id"])


def downgrade() -> None:
    for table in ("ticket_facts", "inbox", "outbox"):
        op.drop_table(table)
