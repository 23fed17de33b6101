"""Ticket collaborators mirrored from routing (who may draft answers besides the owner).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UUID = postgresql.UUID(as_uuid=True)


def upgrade() -> None:
    op.create_table(
        "ticket_collaborators",
        sa.Column("ticket_id", UUID, nullable=False),
        sa.Column("agent_ids", postgresql.ARRAY(UUID), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_ticket_collaborators"),
    )


def downgrade() -> None:
    op.drop_table("ticket_collaborators")
