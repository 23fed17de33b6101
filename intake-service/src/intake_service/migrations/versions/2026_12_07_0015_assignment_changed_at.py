"""Tickets keep when routing's assignment they show was made: older assignment events are ignored.

`assignment_changed_at` is the time of the `ticket.assigned`, `ticket.queued` or
`ticket.transferred` the assignee stands by. Within a partition routing's events arrive in order,
but a dead-lettered `ticket.assigned` replayed after a transfer set the old agent back.

Nullable, no default: a catalogue-only change, however many tickets the table holds. Tickets
assigned before this revision keep a null, and the next event about them applies as before (a
backfill from the timeline would rewrite every row for the rare late replay of an old event).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "tickets",
        sa.Column("assignment_changed_at", sa.DateTime(timezone=True), nullable=True),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_column("tickets", "assignment_changed_at")
