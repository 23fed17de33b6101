"""Deliveries keep the correlation id of the answer they deliver.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("correlation_id", sa.String(200), nullable=True))


def downgrade() -> None:
    op.drop_column("deliveries", "correlation_id")
