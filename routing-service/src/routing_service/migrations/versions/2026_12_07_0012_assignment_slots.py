"""An answered ticket gives its agent's slot back: ``assignments.slot_released_at``.

Set when the ticket's answer is delivered (`ticket.answer_delivered`): the agent's
``active_tickets`` is decremented then, once, and the assignment stays (it names the agent for a
reopening, the workload view and the resolution). Whatever later ends the assignment gives no
slot back for a row that has one.

The column starts empty: assignments answered before this revision keep holding their slot until
they are resolved or closed, as before (routing never learnt which were answered). A downgrade
gives the answered assignments their slots again (the code before counts every assignment until
its resolution), which may put an agent above capacity for a while: they take no new tickets then.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("assignments", sa.Column("slot_released_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.execute(
        "UPDATE agents AS a SET active_tickets = a.active_tickets + r.answered "
        "FROM (SELECT agent_id, count(*) AS answered FROM assignments "
        "WHERE slot_released_at IS NOT NULL GROUP BY agent_id) AS r WHERE a.id = r.agent_id"
    )
    op.drop_column("assignments", "slot_released_at")
