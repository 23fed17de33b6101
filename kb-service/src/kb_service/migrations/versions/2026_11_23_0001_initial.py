"""FAQ candidates, outbox and inbox.

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


def upgrade() -> None:
    create_messaging_tables_v1()
    op.create_table(
        "faq_candidates",
        sa.Column("answer_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("answer_version", sa.Integer(), nullable=False),
        sa.Column("ticket_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("domain", sa.String(100), nullable=True),
        sa.Column("question", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("answer_id", name="pk_faq_candidates"),
    )
    op.create_index("ix_faq_candidates_ticket_id", "faq_candidates", ["ticket_id"])
    op.create_index("ix_faq_candidates_created_at", "faq_candidates", ["created_at"])


def downgrade() -> None:
    for table in ("faq_candidates", "inbox", "outbox"):
        op.drop_table(table)
