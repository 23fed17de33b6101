"""SLA: business calendars, policies, timers; seeds calendar cn-default and the default policies.

The seed lives here (not in the demo seed) so that every database — production, tests, `make run` —
has a working calendar and a policy for every ticket from the moment the tables exist. Leads and
admins edit them through the API afterwards; this revision never touches them again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import uuid

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UUID = postgresql.UUID(as_uuid=True)
TIMESTAMP = sa.DateTime(timezone=True)

CN_OFFICE = [["09:00", "12:00"], ["13:30", "18:00"]]
# (id, name, kind, priority, difficult, precedence, first response minutes, resolution working days)
DEFAULT_POLICIES = [
    ("5a000000-0000-4000-8000-000000000001", "Urgent", None, "urgent", None, 10, 60, 1),
    ("5a000000-0000-4000-8000-000000000002", "Difficult (疑難) and complaints", None, None, True, 20, 240, 5),
    ("5a000000-0000-4000-8000-000000000003", "High priority", None, "high", None, 30, 240, 2),
    ("5a000000-0000-4000-8000-000000000004", "Low priority", None, "low", None, 40, 960, 5),
    ("5a000000-0000-4000-8000-000000000005", "Default", None, None, None, 100, 480, 3),
]


def upgrade() -> None:
    calendars = op.create_table(
        "business_calendars",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("weekly_hours", postgresql.JSONB(), nullable=False),
        sa.Column("holidays", postgresql.ARRAY(sa.Date()), nullable=False),
        sa.Column("workdays", postgresql.ARRAY(sa.Date()), nullable=False),
        sa.Column("holiday_source", sa.String(20), nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_business_calendars"),
    )
    policies = op.create_table(
        "sla_policies",
        sa.Column("id", UUID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=True),
        sa.Column("priority", sa.String(10), nullable=True),
        sa.Column("difficult", sa.Boolean(), nullable=True),
        sa.Column("channel", sa.String(20), nullable=True),
        sa.Column("precedence", sa.Integer(), nullable=False),
        sa.Column("first_response_minutes", sa.Integer(), nullable=False),
        sa.Column("resolution_working_days", sa.Integer(), nullable=False),
        sa.Column("warning_share", sa.Float(), nullable=False),
        sa.Column("pause_when_waiting_on_customer", sa.Boolean(), nullable=False),
        sa.Column("calendar_id", sa.String(64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("warning_share > 0 AND warning_share < 1", name="ck_sla_policies_warning_share"),
        sa.CheckConstraint(
            "first_response_minutes > 0 AND resolution_working_days > 0", name="ck_sla_policies_targets"
        ),
        sa.ForeignKeyConstraint(
            ["calendar_id"], ["business_calendars.id"], name="fk_sla_policies_calendar_id_business_calendars"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_sla_policies"),
        sa.UniqueConstraint("name", name="uq_sla_policies_name"),
    )
    op.create_table(
        "sla_timers",
        sa.Column("ticket_id", UUID, nullable=False),
        sa.Column("target", sa.String(20), nullable=False),
        sa.Column("policy_id", UUID, nullable=False),
        sa.Column("calendar_id", sa.String(64), nullable=False),
        sa.Column("priority", sa.String(10), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("due_at", TIMESTAMP, nullable=False),
        sa.Column("warn_at", TIMESTAMP, nullable=False),
        sa.Column("paused_at", TIMESTAMP, nullable=True),
        sa.Column("stopped_at", TIMESTAMP, nullable=True),
        sa.Column("stopped_by", sa.String(20), nullable=True),
        sa.Column("warned_at", TIMESTAMP, nullable=True),
        sa.Column("breached_at", TIMESTAMP, nullable=True),
        sa.Column("escalated", sa.Boolean(), nullable=False),
        sa.CheckConstraint("target IN ('first_response', 'resolution')", name="ck_sla_timers_target"),
        sa.ForeignKeyConstraint(
            ["calendar_id"], ["business_calendars.id"], name="fk_sla_timers_calendar_id_business_calendars"
        ),
        sa.ForeignKeyConstraint(
            ["policy_id"], ["sla_policies.id"], name="fk_sla_timers_policy_id_sla_policies"
        ),
        sa.PrimaryKeyConstraint("ticket_id", "target", name="pk_sla_timers"),
    )
    op.create_index(
        "ix_sla_timers_warn_due",
        "sla_timers",
        ["warn_at"],
        postgresql_where=sa.text(
            "warned_at IS NULL AND breached_at IS NULL AND stopped_at IS NULL AND paused_at IS NULL"
        ),
    )
    op.create_index(
        "ix_sla_timers_breach_due",
        "sla_timers",
        ["due_at"],
        postgresql_where=sa.text("breached_at IS NULL AND stopped_at IS NULL AND paused_at IS NULL"),
    )
    op.bulk_insert(
        calendars,
        [
            {
                "id": "cn-default",
                "name": "中國大陸 工作日 (Asia/Shanghai)",
                "time_zone": "Asia/Shanghai",
                "weekly_hours": {str(day): CN_OFFICE for day in range(5)},
                "holidays": [],
                "workdays": [],
                "holiday_source": "CN",
            }
        ],
    )
    op.bulk_insert(
        policies,
        [
            {
                "id": uuid.UUID(policy_id),
                "name": name,
                "kind": kind,
                "priority": priority,
                "difficult": difficult,
                "channel": None,
                "precedence": precedence,
                "first_response_minutes": first_response,
                "resolution_working_days": resolution_days,
                "warning_share": 0.8,
                "pause_when_waiting_on_customer": True,
                "calendar_id": "cn-default",
                "active": True,
            }
            for policy_id, name, kind, priority, difficult, precedence, first_response, resolution_days in (
                DEFAULT_POLICIES
            )
        ],
    )


def downgrade() -> None:
    for table in ("sla_timers", "sla_policies", "business_calendars"):
        op.drop_table(table)
