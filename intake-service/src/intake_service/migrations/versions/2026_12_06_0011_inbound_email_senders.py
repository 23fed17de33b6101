"""Archived emails name their sender (hashed) and the ticket they refer to: erasure finds them.

Auto-replies, bounces and unreadable messages are archived without a ticket, so erasure, which
went by ticket, never emptied them. Messages archived before this revision get the same from
their raw headers.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

import hashlib
import re
import uuid
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UUID = postgresql.UUID(as_uuid=True)
BATCH = 500
# Frozen here, as the application read senders when this revision was written: a migration must
# do the same thing whenever it runs.
HEADER_BYTES = 64 * 1024
BLANK_LINE = re.compile(rb"\r?\n\r?\n")
FROM_HEADER = re.compile(rb"^from:((?:[^\r\n]|\r?\n[ \t])*)", re.IGNORECASE | re.MULTILINE)
ID_HEADERS = re.compile(
    rb"^(?:in-reply-to|references|message-id):((?:[^\r\n]|\r?\n[ \t])*)", re.IGNORECASE | re.MULTILINE
)
BRACKETED_ADDRESS = re.compile(r"<([^<>@\s]+@[^<>@\s]+)>")
BARE_ADDRESS = re.compile(r"[^<>\"'()\s,;:@]+@[^<>\"'()\s,;:@]+")
BRACKETED_ID = re.compile(r"<([^<>\s]+)>")


def sender_hash(head: bytes) -> str | None:
    block = head[: match.start()] if (match := BLANK_LINE.search(head)) else head
    header = FROM_HEADER.search(block)
    if header is None:
        return None
    value = header.group(1).decode("utf-8", "replace")
    found = BRACKETED_ADDRESS.search(value)
    address = found.group(1) if found else (bare.group() if (bare := BARE_ADDRESS.search(value)) else None)
    return hashlib.sha256(address.strip().lower().encode()).hexdigest() if address else None


def referenced_ids(head: bytes, own: str | None) -> list[str]:
    """Message-IDs a message answers or encloses (a bounce's copy of our answer), in order."""
    ids = []
    for header in ID_HEADERS.finditer(head):
        ids.extend(BRACKETED_ID.findall(header.group(1).decode("utf-8", "replace")))
    return [i for i in dict.fromkeys(ids) if i != own]


def backfill(bind: sa.Connection) -> None:
    """In batches, each committed on its own: no long transaction over a large archive."""
    after = uuid.UUID(int=0)
    while True:
        rows = bind.execute(
            sa.text(
                "SELECT id, message_id, substring(raw FROM 1 FOR :bytes) AS head FROM inbound_emails"
                " WHERE ticket_id IS NULL AND id > :after"
                " ORDER BY id LIMIT :batch"
            ),
            {"bytes": HEADER_BYTES, "after": after, "batch": BATCH},
        ).all()
        if not rows:
            return
        after = rows[-1].id
        references = {row.id: referenced_ids(bytes(row.head), row.message_id) for row in rows}
        wanted = sorted({i for ids in references.values() for i in ids})
        tickets = (
            dict(
                bind.execute(
                    sa.text(
                        "SELECT message_id, ticket_id FROM email_thread_ids WHERE message_id = ANY(:ids)"
                    ),
                    {"ids": wanted},
                ).all()
            )
            if wanted
            else {}
        )
        updates: list[dict[str, Any]] = []
        for row in rows:
            digest = sender_hash(bytes(row.head))
            thread = next((tickets[i] for i in references[row.id] if i in tickets), None)
            if digest is not None or thread is not None:
                updates.append({"id": row.id, "sender_hash": digest, "thread": thread})
        if updates:
            bind.execute(
                sa.text(
                    "UPDATE inbound_emails SET sender_hash = :sender_hash, thread_ticket_id = :thread"
                    " WHERE id = :id"
                ),
                updates,
            )


INDEXES = (
    ("ix_inbound_emails_sender_hash", "sender_hash", None),
    ("ix_inbound_emails_ticket_id", "ticket_id", None),
    ("ix_inbound_emails_thread_ticket_id", "thread_ticket_id", "thread_ticket_id IS NOT NULL"),
)


def upgrade() -> None:
    # Everything after the columns runs outside the migration's transaction: the columns commit at
    # once (adding them locks the table), the backfill commits batch by batch, and the indexes are
    # built concurrently, so the email channel is not held back while a large archive is read. An
    # attempt that failed halfway has committed some of it and runs again: each step can repeat.
    op.add_column(
        "inbound_emails", sa.Column("sender_hash", sa.String(64), nullable=True), if_not_exists=True
    )
    op.add_column("inbound_emails", sa.Column("thread_ticket_id", UUID, nullable=True), if_not_exists=True)
    with op.get_context().autocommit_block():
        backfill(op.get_bind())
        for name, column, where in INDEXES:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            op.create_index(
                name,
                "inbound_emails",
                [column],
                postgresql_where=sa.text(where) if where else None,
                postgresql_concurrently=True,
            )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, _, _ in reversed(INDEXES):
            op.drop_index(name, table_name="inbound_emails", postgresql_concurrently=True)
    op.drop_column("inbound_emails", "thread_ticket_id")
    op.drop_column("inbound_emails", "sender_hash")
