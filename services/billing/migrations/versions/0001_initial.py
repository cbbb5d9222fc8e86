"""Backbone tables and credit accounts.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from common.messaging.tables import create_backbone_tables, drop_backbone_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "billing"


def upgrade() -> None:
    create_backbone_tables(op.get_bind(), SCHEMA)
    op.create_table(
        "accounts",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, unique=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("balance_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("held_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("opened_by_event", sa.String(128)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("held_minor >= 0", name="held_non_negative"),
        sa.CheckConstraint("balance_minor - held_minor >= 0", name="available_non_negative"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("accounts", schema=SCHEMA)
    drop_backbone_tables(op.get_bind(), SCHEMA)
