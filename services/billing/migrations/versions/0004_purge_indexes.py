"""Outbox and inbox: the indexes the relay's purge reads (common.messaging.tables.PURGE_INDEXES).

Built CONCURRENTLY, outside the migration's transaction: emits go on meanwhile.

Revision ID: 0004
Revises: 0003
"""

from alembic import op
from common.messaging.tables import add_purge_indexes, drop_purge_indexes

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = "billing"


def upgrade() -> None:
    add_purge_indexes(op, SCHEMA)


def downgrade() -> None:
    drop_purge_indexes(op, SCHEMA)
