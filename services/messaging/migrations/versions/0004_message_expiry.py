"""messages.expires_at: a message that is worthless after a time (an OTP code) is failed as
`expired` instead of being sent late.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

S = "messaging"


def upgrade() -> None:
    op.add_column("messages", sa.Column("expires_at", sa.DateTime(timezone=True)), schema=S)


def downgrade() -> None:
    op.drop_column("messages", "expires_at", schema=S)
