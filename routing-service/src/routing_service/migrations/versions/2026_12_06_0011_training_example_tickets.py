"""Training examples remember the resolved ticket they came from: ``ticket_id``.

A customer's erasure (`customer.erased`) deletes the examples their tickets became; without the
ticket id an example (deduplicated by text hash) could never be found again. Examples stored
before this revision have no ticket id and stay unfindable: erasure cannot reach them, and only
deleting them by hand (or every ``resolved_ticket`` example) would. Imported examples have none
either; they are not customers' words.

The column starts empty, so the plain index build is quick and holds the table's writes only
for that long.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("training_examples", sa.Column("ticket_id", postgresql.UUID(as_uuid=True), nullable=True))
    op.create_index("ix_training_examples_ticket_id", "training_examples", ["ticket_id"])


def downgrade() -> None:
    op.drop_index("ix_training_examples_ticket_id", table_name="training_examples")
    op.drop_column("training_examples", "ticket_id")
