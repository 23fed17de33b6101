"""Messaging tables v3: the outbox keeps events as json text, not jsonb.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from helpdesk_shared.chassis.migrations import messaging_tables_v3_downgrade, messaging_tables_v3_upgrade

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    messaging_tables_v3_upgrade()


def downgrade() -> None:
    messaging_tables_v3_downgrade()
