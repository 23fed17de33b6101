"""Skill levels and schedules of agents; ticket domain and language on assignments and the queue;
when an assignee touched a ticket; routed tickets with their classification text until resolution.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UUID = postgresql.UUID(as_uuid=True)
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column(
        "agents",
        sa.Column("skill_levels", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
    )
    op.add_column("agents", sa.Column("schedule", postgresql.JSONB(), nullable=True))
    op.add_column("assignments", sa.Column("domain", sa.String(100), nullable=True))
    op.add_column("assignments", sa.Column("language", sa.String(35), nullable=True))
    op.add_column("assignments", sa.Column("touched_at", TIMESTAMP, nullable=True))
    op.add_column("queue", sa.Column("domain", sa.String(100), nullable=True))
    op.add_column("queue", sa.Column("language", sa.String(35), nullable=True))
    op.create_table(
        "routed_tickets",
        sa.Column("ticket_id", UUID, nullable=False),
        sa.Column("domain", sa.String(100), nullable=True),
        sa.Column("language", sa.String(35), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("routed_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_routed_tickets"),
    )


def downgrade() -> None:
    op.drop_table("routed_tickets")
    for table, column in (
        ("queue", "language"),
        ("queue", "domain"),
        ("assignments", "touched_at"),
        ("assignments", "language"),
        ("assignments", "domain"),
        ("agents", "schedule"),
        ("agents", "skill_levels"),
    ):
        op.drop_column(table, column)
