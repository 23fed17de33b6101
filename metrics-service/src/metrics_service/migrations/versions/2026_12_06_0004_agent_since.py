"""Ticket facts: when the credited agent got the ticket (orders assignments and transfers).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ticket_facts", sa.Column("agent_since", sa.DateTime(timezone=True), nullable=True))
    # Until now only assignments set the agent, so the assignment's time is when they got it.
    op.execute("UPDATE ticket_facts SET agent_since = assigned_at WHERE agent_id IS NOT NULL")


def downgrade() -> None:
    op.drop_column("ticket_facts", "agent_since")
