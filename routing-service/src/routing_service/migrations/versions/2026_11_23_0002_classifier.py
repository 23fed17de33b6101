"""Classifier: training examples, model versions, routing rules.

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
    op.create_table(
        "training_examples",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("text_hash", sa.String(64), nullable=False),
        sa.Column("domain", sa.String(100), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_training_examples"),
        sa.UniqueConstraint("text_hash", "domain", name="uq_training_examples_text_hash"),
        sa.CheckConstraint("source IN ('import', 'resolved_ticket')", name="ck_training_examples_source"),
    )
    op.create_table(
        "classifier_models",
        sa.Column("version", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("format", sa.String(50), nullable=False),
        sa.Column("trained_at", TIMESTAMP, nullable=False),
        sa.Column("trained_by", sa.String(100), nullable=True),
        sa.Column("n_examples", sa.Integer(), nullable=False),
        sa.Column("cv_accuracy", sa.Float(), nullable=True),
        sa.Column("classes", postgresql.ARRAY(sa.String(100)), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("version", name="pk_classifier_models"),
    )
    op.create_index(
        "uq_classifier_models_active",
        "classifier_models",
        ["active"],
        unique=True,
        postgresql_where=sa.text("active"),
    )
    op.create_table(
        "routing_rules",
        sa.Column("id", UUID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("pattern", sa.String(500), nullable=False),
        sa.Column("is_regex", sa.Boolean(), nullable=False),
        sa.Column("domain", sa.String(100), nullable=True),
        sa.Column("category", sa.String(200), nullable=True),
        sa.Column("urgent", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_routing_rules"),
        sa.UniqueConstraint("name", name="uq_routing_rules_name"),
    )


def downgrade() -> None:
    for table in ("routing_rules", "classifier_models", "training_examples"):
        op.drop_table(table)
