"""Outbox and inbox: the indexes the relay's purge reads (common.messaging.tables.PURGE_INDEXES).

Built CONCURRENTLY, outside the migration's transaction: emits go on meanwhile.

Revision ID: 0002
Revises: 0001
"""

from alembic import op
from common.messaging.tables import add_purge_indexes, drop_purge_indexes

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "chat"


def upgrade() -> None:
    add_purge_indexes(op, SCHEMA)


def downgrade() -> None:
    drop_purge_indexes(op, SCHEMA)
