"""Transfer audit.

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


def upgrade() -> None:
    op.create_table(
        "transfers",
        sa.Column("id", UUID, nullable=False),
        sa.Column("ticket_id", UUID, nullable=False),
        sa.Column("from_agent_id", UUID, nullable=True),
        sa.Column("to_agent_id", UUID, nullable=False),
        sa.Column("requested_by", UUID, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("transferred_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["to_agent_id"], ["agents.id"], name="fk_transfers_to_agent_id_agents"),
        sa.PrimaryKeyConstraint("id", name="pk_transfers"),
    )
    op.create_index("ix_transfers_ticket_id", "transfers", ["ticket_id"])


def downgrade() -> None:
    op.drop_table("transfers")
