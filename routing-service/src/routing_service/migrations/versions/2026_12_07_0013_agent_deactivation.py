"""Deactivated agents: ``DELETE /v1/agents/{id}`` keeps the row (history names it) and stamps it.

A deactivated agent is offline for good: the check constraint makes every assignment path (they
all require an online agent) pass them by, whatever a concurrent request tries.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("agents", sa.Column("deactivated_at", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint(
        "ck_agents_deactivated_offline", "agents", "deactivated_at IS NULL OR presence = 'offline'"
    )


def downgrade() -> None:
    op.drop_constraint("ck_agents_deactivated_offline", "agents", type_="check")
    op.drop_column("agents", "deactivated_at")
