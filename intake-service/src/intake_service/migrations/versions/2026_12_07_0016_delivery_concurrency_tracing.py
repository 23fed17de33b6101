"""Deliveries keep the trace of their `answer.published`, and fresh ones are found before retries.

- `traceparent`: of the handler of `answer.published` (a child of the event's). The worker runs
  each attempt as a child of it, so `ticket.answer_delivered` (and a `ticket.reopened` it brings)
  and the webhook carry the answer's trace instead of none. Nullable, no default: a catalogue-only
  change; deliveries stored before it start a trace of their own when attempted.
- `ix_deliveries_due_fresh`: the pending deliveries never attempted, which the worker claims
  before any retry (a backlog of retries to a dead webhook no longer holds up new answers). Built
  concurrently, outside the migration's transaction, so neither the worker nor `answer.published`
  waits while the table is read; an interrupted build left an invalid index, dropped and built
  again on the next start.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

FRESH_INDEX = "ix_deliveries_due_fresh"


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("traceparent", sa.String(200), nullable=True), if_not_exists=True)
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {FRESH_INDEX}")
        op.create_index(
            FRESH_INDEX,
            "deliveries",
            ["next_attempt_at"],
            postgresql_where=sa.text("status = 'pending' AND attempts = 0"),
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(FRESH_INDEX, table_name="deliveries", postgresql_concurrently=True)
    op.drop_column("deliveries", "traceparent")
