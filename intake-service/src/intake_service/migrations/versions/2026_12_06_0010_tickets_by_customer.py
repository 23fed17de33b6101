"""A customer's tickets are found by index: export and erasure read them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Built concurrently (outside the migration's transaction): a plain build would hold back every
    # new ticket for as long as it takes to read a large table. A build that failed halfway left an
    # invalid index under this name, and this migration runs again: that one goes first.
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_tickets_customer_id")
        op.create_index("ix_tickets_customer_id", "tickets", ["customer_id"], postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_tickets_customer_id", table_name="tickets", postgresql_concurrently=True)
