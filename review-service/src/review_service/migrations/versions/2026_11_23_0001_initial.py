"""Ticket owners, outbox and inbox.

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
        "ticket_owners",
        sa.Column("ticket_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("agent_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_ticket_owners"),
    )
    op.create_index("ix_ticket_owners_agent_id", "ticket_owners", ["agent_id"])


def downgrade() -> None:
    for table in ("ticket_owners", "inbox", "outbox"):
        op.drop_table(table)
