"""Backbone tables (outbox, inbox, NOTIFY trigger).

Revision ID: 0001
Revises:
"""

from alembic import op
from common.messaging.tables import create_backbone_tables, drop_backbone_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "chat"


def upgrade() -> None:
    create_backbone_tables(op.get_bind(), SCHEMA)


def downgrade() -> None:
    drop_backbone_tables(op.get_bind(), SCHEMA)
