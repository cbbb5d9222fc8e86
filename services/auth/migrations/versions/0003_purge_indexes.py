"""Outbox and inbox: the indexes the relay's purge reads (common.messaging.tables.PURGE_INDEXES).

Built CONCURRENTLY, outside the migration's transaction: emits go on meanwhile.

Revision ID: 0003
Revises: 0002
"""

from alembic import op
from common.messaging.tables import add_purge_indexes, drop_purge_indexes

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "auth"


def upgrade() -> None:
    add_purge_indexes(op, SCHEMA)


def downgrade() -> None:
    drop_purge_indexes(op, SCHEMA)
