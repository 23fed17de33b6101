"""A ticket handed back to the queue keeps its owner row with no agent.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

Deleting the row instead would let an older `ticket.assigned` that arrives after the
`ticket.queued` bring the previous owner back: the row's stamp is what refuses it.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("ticket_owners", "agent_id", nullable=True)


def downgrade() -> None:
    # The old schema cannot say "nobody": a queued ticket there is one with no row.
    op.execute("DELETE FROM ticket_owners WHERE agent_id IS NULL")
    op.alter_column("ticket_owners", "agent_id", nullable=False)
