"""Idempotency-Key on customer follow-ups: the key's row names the message it stored.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: a catalogue-only change, however many keys the table holds.
    op.add_column("idempotency_keys", sa.Column("message_id", postgresql.UUID(as_uuid=True), nullable=True))


def downgrade() -> None:
    op.drop_column("idempotency_keys", "message_id")
