"""messages: leave a quarter of each heap page free, so the updates that change no indexed column
(the dispatcher's claim, a `delivered` report) are HOT: the new row version goes on the same
page and none of the table's seven indexes gets an entry for it. With full pages (the default,
and messages are only ever appended) every update wrote all seven.

Only pages written from now on are affected (no rewrite of the table).

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

S = "messaging"


def upgrade() -> None:
    op.execute(f"ALTER TABLE {S}.messages SET (fillfactor = 75)")


def downgrade() -> None:
    op.execute(f"ALTER TABLE {S}.messages RESET (fillfactor)")
