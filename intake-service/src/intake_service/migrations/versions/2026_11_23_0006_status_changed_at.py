"""When each ticket's status last changed, for auto-close.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Existing tickets start their clock at the upgrade: a deployment must not close the whole
    # answered backlog at once. now() is stable, so the column is added without rewriting the table.
    op.add_column(
        "tickets", sa.Column("status_changed_at", TIMESTAMP, server_default=sa.func.now(), nullable=False)
    )
    op.create_index(
        "ix_tickets_auto_close_due",
        "tickets",
        ["status_changed_at"],
        postgresql_where=sa.text("status IN ('answered', 'resolved')"),
    )


def downgrade() -> None:
    op.drop_index("ix_tickets_auto_close_due", table_name="tickets")
    op.drop_column("tickets", "status_changed_at")
