"""Deliveries are claimed one by one with a token, retried by age, and one per answer version.

- `claim_token` / `claimed_until`: the worker attempt holding a delivery; only the holder sends it
  and records its outcome (two replicas sent one answer twice, and a late failure could turn a
  delivered answer into a failed one).
- `pending_since`: when the delivery last became pending (published, or retried by a lead); it is
  given up once pending for INTAKE_DELIVERY_GIVE_UP_AFTER_SECONDS. Null on existing rows, which
  count from `created_at`.
- `uq_deliveries_answer_version`: the same answer version published again under a new event id
  made a second delivery. Such duplicates already stored are deleted first, keeping one per answer
  version: the delivered one (the latest, if several were), else a pending one, else the oldest.
  Their outbound messages stay on the ticket.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

UUID = postgresql.UUID(as_uuid=True)
TIMESTAMP = sa.DateTime(timezone=True)
UNIQUE_INDEX = "uq_deliveries_answer_version"
# Frozen here: the rows the unique index would refuse, all but the one kept of each answer version.
DELETE_DUPLICATES = """
DELETE FROM deliveries
WHERE id IN (
    SELECT id FROM (
        SELECT id, row_number() OVER (
            PARTITION BY answer_id, answer_version
            ORDER BY delivered_at DESC NULLS LAST, (status = 'pending') DESC, created_at, id
        ) AS rank
        FROM deliveries
    ) ranked
    WHERE rank > 1
)
"""


def upgrade() -> None:
    # Nullable columns without defaults: added without rewriting the table. Everything after them
    # runs outside the migration's transaction, so the columns commit at once, and the unique
    # index is built concurrently: the delivery worker and `answer.published` are not held back
    # while the table is read. An attempt that failed halfway (a build that met a duplicate written
    # meanwhile by a replica still on the old code, a lost connection) left an invalid index under
    # this name and runs again on the next start: each step can repeat.
    op.add_column("deliveries", sa.Column("claim_token", UUID, nullable=True), if_not_exists=True)
    op.add_column("deliveries", sa.Column("claimed_until", TIMESTAMP, nullable=True), if_not_exists=True)
    op.add_column("deliveries", sa.Column("pending_since", TIMESTAMP, nullable=True), if_not_exists=True)
    with op.get_context().autocommit_block():
        op.execute(DELETE_DUPLICATES)
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {UNIQUE_INDEX}")
        op.create_index(
            UNIQUE_INDEX,
            "deliveries",
            ["answer_id", "answer_version"],
            unique=True,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(UNIQUE_INDEX, table_name="deliveries", postgresql_concurrently=True)
    op.drop_column("deliveries", "pending_since")
    op.drop_column("deliveries", "claimed_until")
    op.drop_column("deliveries", "claim_token")
