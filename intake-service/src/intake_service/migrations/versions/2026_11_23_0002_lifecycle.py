"""Messages, timeline, idempotency keys, lifecycle counters and Chinese full-text search.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UUID = postgresql.UUID(as_uuid=True)
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("tickets", sa.Column("team_id", UUID, nullable=True))
    op.add_column("tickets", sa.Column("previous_assignee_id", UUID, nullable=True))
    op.add_column("tickets", sa.Column("reopen_count", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("tickets", sa.Column("resolution_count", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("tickets", sa.Column("search_tokens", sa.Text(), nullable=False, server_default=""))
    op.add_column("tickets", sa.Column("resolved_at", TIMESTAMP, nullable=True))
    op.add_column("tickets", sa.Column("closed_at", TIMESTAMP, nullable=True))
    for column in ("reopen_count", "resolution_count", "search_tokens"):
        op.alter_column("tickets", column, server_default=None)
    op.create_index("ix_tickets_team_id", "tickets", ["team_id"])
    op.create_index("ix_tickets_channel_created_at", "tickets", ["channel", "created_at"])
    op.create_index("ix_tickets_kind_created_at", "tickets", ["kind", "created_at"])
    op.create_index("ix_tickets_priority_created_at", "tickets", ["priority", "created_at"])
    op.create_index(
        "ix_tickets_search",
        "tickets",
        [sa.text("to_tsvector('simple'::regconfig, search_tokens)")],
        postgresql_using="gin",
    )
    op.create_table(
        "messages",
        sa.Column("id", UUID, nullable=False),
        sa.Column("ticket_id", UUID, nullable=False),
        sa.Column("direction", sa.String(10), nullable=False),
        sa.Column("author", sa.String(20), nullable=False),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], name="fk_messages_ticket_id_tickets"),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
    )
    op.create_index("ix_messages_ticket_id_created_at", "messages", ["ticket_id", "created_at"])
    op.create_table(
        "timeline",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("ticket_id", UUID, nullable=False),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("occurred_at", TIMESTAMP, nullable=False),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("data", postgresql.JSONB(), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], name="fk_timeline_ticket_id_tickets"),
        sa.PrimaryKeyConstraint("seq", name="pk_timeline"),
    )
    op.create_index("ix_timeline_ticket_id_seq", "timeline", ["ticket_id", "seq"])
    op.create_table(
        "idempotency_keys",
        sa.Column("caller", sa.String(200), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("ticket_id", UUID, nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("caller", "key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_table("timeline")
    op.drop_table("messages")
    for index in (
        "ix_tickets_search",
        "ix_tickets_priority_created_at",
        "ix_tickets_kind_created_at",
        "ix_tickets_channel_created_at",
        "ix_tickets_team_id",
    ):
        op.drop_index(index, table_name="tickets")
    for column in (
        "closed_at",
        "resolved_at",
        "search_tokens",
        "resolution_count",
        "reopen_count",
        "previous_assignee_id",
        "team_id",
    ):
        op.drop_column("tickets", column)
