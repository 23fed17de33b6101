"""Messaging tables v2: parked outbox rows, inbox retention index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from helpdesk_shared.chassis.migrations import messaging_tables_v2_downgrade, messaging_tables_v2_upgrade

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    messaging_tables_v2_upgrade()


def downgrade() -> None:
    messaging_tables_v2_downgrade()
