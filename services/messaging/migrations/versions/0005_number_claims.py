"""sms_number_claims: a number a tenant asked to register, waiting for the code sent to it.
A number becomes the tenant's (sms_numbers) only once the code comes back.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

S = "messaging"


def upgrade() -> None:
    op.create_table(
        "sms_number_claims",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.String(20), nullable=False),
        sa.Column("label", sa.String(100)),
        sa.Column("code_id", sa.Uuid(), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("tenant_id", "number", name="pk_sms_number_claims"),
        schema=S,
    )


def downgrade() -> None:
    op.drop_table("sms_number_claims", schema=S)
