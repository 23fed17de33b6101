"""Attachments metadata, satisfaction ratings, complaint case files, customer erasure.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UUID = postgresql.UUID(as_uuid=True)
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("customers", sa.Column("erased_at", TIMESTAMP, nullable=True))
    op.create_table(
        "attachments",
        sa.Column("id", UUID, nullable=False),
        sa.Column("ticket_id", UUID, nullable=False),
        sa.Column("message_id", UUID, nullable=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("url", sa.String(2048), nullable=True),
        sa.Column("storage_key", sa.String(1024), nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], name="fk_attachments_ticket_id_tickets"),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], name="fk_attachments_message_id_messages"),
        sa.PrimaryKeyConstraint("id", name="pk_attachments"),
    )
    op.create_index("ix_attachments_ticket_id", "attachments", ["ticket_id"])
    op.create_table(
        "ratings",
        sa.Column("ticket_id", UUID, nullable=False),
        sa.Column("resolution_count", sa.Integer(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("agent_id", UUID, nullable=True),
        sa.Column("rated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], name="fk_ratings_ticket_id_tickets"),
        sa.PrimaryKeyConstraint("ticket_id", "resolution_count", name="pk_ratings"),
    )
    op.create_table(
        "complaint_cases",
        sa.Column("ticket_id", UUID, nullable=False),
        sa.Column("responsible_department", sa.String(200), nullable=True),
        sa.Column("responsible_person_id", UUID, nullable=True),
        sa.Column("plan", sa.Text(), nullable=True),
        sa.Column("deadline", TIMESTAMP, nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("root_cause", sa.Text(), nullable=True),
        sa.Column("corrective_action", sa.Text(), nullable=True),
        sa.Column("archived", sa.Boolean(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], name="fk_complaint_cases_ticket_id_tickets"),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_complaint_cases"),
    )


def downgrade() -> None:
    op.drop_table("complaint_cases")
    op.drop_table("ratings")
    op.drop_table("attachments")
    op.drop_column("customers", "erased_at")
