"""Outbox and inbox: the indexes the relay's purge reads (common.messaging.tables.purge_index_sql).

Built CONCURRENTLY, outside the migration's transaction: emits go on meanwhile.

Revision ID: 0004
Revises: 0003
"""

from alembic import op
from common.messaging.tables import drop_purge_index_sql, purge_index_sql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = "billing"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for statement in purge_index_sql(SCHEMA):
            op.execute(statement)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for statement in drop_purge_index_sql(SCHEMA):
            op.execute(statement)
