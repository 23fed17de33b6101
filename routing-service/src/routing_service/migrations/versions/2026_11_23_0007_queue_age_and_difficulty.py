"""The queue by the customer's wait, and difficult tickets waiting for their lead: queue entries
get ``waiting_since``, ``difficult`` and ``lead_id``; routed tickets remember their priority,
difficulty and when the current wait began.

Existing rows: a queue entry's wait is taken to have begun when it was queued, a routed ticket's
when it was routed (the best either row knows); neither was difficult as far as the queue knew.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UUID = postgresql.UUID(as_uuid=True)
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("queue", sa.Column("waiting_since", TIMESTAMP, nullable=True))
    op.execute("UPDATE queue SET waiting_since = queued_at")
    op.alter_column("queue", "waiting_since", nullable=False)
    op.add_column("queue", sa.Column("difficult", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("queue", sa.Column("lead_id", UUID, nullable=True))
    op.create_index("ix_queue_lead_id", "queue", ["lead_id"])
    op.add_column("routed_tickets", sa.Column("priority", sa.String(10), nullable=True))
    op.add_column(
        "routed_tickets", sa.Column("difficult", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.add_column("routed_tickets", sa.Column("waiting_since", TIMESTAMP, nullable=True))
    op.execute("UPDATE routed_tickets SET waiting_since = routed_at")
    op.alter_column("routed_tickets", "waiting_since", nullable=False)


def downgrade() -> None:
    op.drop_index("ix_queue_lead_id", table_name="queue")
    for table, column in (
        ("routed_tickets", "waiting_since"),
        ("routed_tickets", "difficult"),
        ("routed_tickets", "priority"),
        ("queue", "lead_id"),
        ("queue", "difficult"),
        ("queue", "waiting_since"),
    ):
        op.drop_column(table, column)
