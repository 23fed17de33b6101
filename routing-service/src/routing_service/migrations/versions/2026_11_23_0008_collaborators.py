"""Ticket collaborators: agents a lead added to a ticket besides its assignee.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UUID = postgresql.UUID(as_uuid=True)


def upgrade() -> None:
    op.create_table(
        "ticket_collaborators",
        sa.Column("ticket_id", UUID, nullable=False),
        sa.Column("agent_id", UUID, nullable=False),
        sa.Column("added_by", UUID, nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], name="fk_ticket_collaborators_agent_id_agents"),
        sa.PrimaryKeyConstraint("ticket_id", "agent_id", name="pk_ticket_collaborators"),
    )
    op.create_index("ix_ticket_collaborators_agent_id", "ticket_collaborators", ["agent_id"])


def downgrade() -> None:
    op.drop_table("ticket_collaborators")
