"""Teams, agents, assignments, queue, outbox and inbox.

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

UUID = postgresql.UUID(as_uuid=True)
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    create_messaging_tables_v1()
    op.create_table(
        "teams",
        sa.Column("id", UUID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("lead_id", UUID, nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_teams"),
        sa.UniqueConstraint("name", name="uq_teams_name"),
    )
    op.create_table(
        "agents",
        sa.Column("id", UUID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("team_id", UUID, nullable=True),
        sa.Column("roles", postgresql.ARRAY(sa.String(30)), nullable=False),
        sa.Column("domains", postgresql.ARRAY(sa.String(100)), nullable=False),
        sa.Column("languages", postgresql.ARRAY(sa.String(35)), nullable=False),
        sa.Column("max_concurrent", sa.Integer(), nullable=False),
        sa.Column("active_tickets", sa.Integer(), nullable=False),
        sa.Column("presence", sa.String(20), nullable=False),
        sa.Column("last_assigned_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], name="fk_agents_team_id_teams"),
        sa.PrimaryKeyConstraint("id", name="pk_agents"),
    )
    op.create_index("ix_agents_team_id", "agents", ["team_id"])
    op.create_index("ix_agents_created_at_id", "agents", ["created_at", "id"])
    op.create_table(
        "assignments",
        sa.Column("ticket_id", UUID, nullable=False),
        sa.Column("agent_id", UUID, nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("assigned_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], name="fk_assignments_agent_id_agents"),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_assignments"),
    )
    op.create_index("ix_assignments_agent_id", "assignments", ["agent_id"])
    op.create_table(
        "queue",
        sa.Column("ticket_id", UUID, nullable=False),
        sa.Column("priority_rank", sa.Integer(), nullable=False),
        sa.Column("priority", sa.String(10), nullable=False),
        sa.Column("queued_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_queue"),
    )


def downgrade() -> None:
    for table in ("queue", "assignments", "agents", "teams", "inbox", "outbox"):
        op.drop_table(table)
