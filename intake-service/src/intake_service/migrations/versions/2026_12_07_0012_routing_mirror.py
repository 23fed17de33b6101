"""Tickets mirror routing's classification (domain, category, difficulty, SLA due times) and escalations.

Every column is nullable or has a constant default: adding them changes the catalogue only, not
the rows. Tickets routed before this revision keep nulls (intake ignored those decisions then);
their channel's category hint still answers the category filter.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime(timezone=True)


def columns() -> list[sa.Column[object]]:
    """The new columns (fresh objects each time: a column belongs to one table)."""
    return [
        sa.Column("domain", sa.String(100), nullable=True),
        sa.Column("category", sa.String(200), nullable=True),
        sa.Column("difficult", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("sla_policy_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("first_response_due_at", TIMESTAMP, nullable=True),
        sa.Column("resolution_due_at", TIMESTAMP, nullable=True),
        # When routing made the decision the row holds: an older event never undoes a newer one.
        sa.Column("classified_at", TIMESTAMP, nullable=True),
        sa.Column("escalated_at", TIMESTAMP, nullable=True),
    ]


CATEGORY_INDEX = "ix_tickets_category_created_at"


def upgrade() -> None:
    # The columns commit before the index is built (the autocommit block ends the migration's
    # transaction): an attempt that failed building it runs again and finds them there.
    for column in columns():
        op.add_column("tickets", column, if_not_exists=True)
    # Built concurrently, so new tickets are not held back while a large table is read; a build
    # that failed halfway left an invalid index under this name, which goes first.
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {CATEGORY_INDEX}")
        op.create_index(
            CATEGORY_INDEX,
            "tickets",
            [sa.text("coalesce(category, category_hint)"), "created_at"],
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(CATEGORY_INDEX, table_name="tickets", postgresql_concurrently=True)
    for column in reversed(columns()):
        op.drop_column("tickets", column.name)
