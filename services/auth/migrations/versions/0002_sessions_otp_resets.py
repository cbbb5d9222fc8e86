"""Profiles, refresh-token families, OTP challenges, password resets, key rotation window.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "auth"


def upgrade() -> None:
    op.add_column("users", sa.Column("about", sa.String(500)), schema=SCHEMA)
    op.add_column("users", sa.Column("avatar_media_id", sa.String(64)), schema=SCHEMA)
    op.add_column("users", sa.Column("phone_verified_at", sa.DateTime(timezone=True)), schema=SCHEMA)
    op.create_index("ix_users_name_lower", "users", [sa.text("lower(name)")], schema=SCHEMA)
    op.add_column("signing_keys", sa.Column("active_from", sa.DateTime(timezone=True),
                                            nullable=False, server_default=sa.func.now()), schema=SCHEMA)
    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("family_id", sa.Uuid, nullable=False, index=True),
        sa.Column("user_id", sa.Uuid, sa.ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("tenant_id", sa.Uuid, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        schema=SCHEMA,
    )
    op.create_table(
        "otp_challenges",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("phone", sa.String(20), nullable=False),
        sa.Column("purpose", sa.String(20), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consumed_at", sa.DateTime(timezone=True)),
        sa.Column("locked_at", sa.DateTime(timezone=True)),
        sa.Column("superseded_at", sa.DateTime(timezone=True)),
        sa.Column("requested_ip", sa.String(64)),
        sa.CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        schema=SCHEMA,
    )
    op.create_index("ix_otp_challenges_phone_purpose", "otp_challenges", ["phone", "purpose", "created_at"], schema=SCHEMA)
    op.create_table(
        "password_resets",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("user_id", sa.Uuid, sa.ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True)),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("password_resets", schema=SCHEMA)
    op.drop_index("ix_otp_challenges_phone_purpose", table_name="otp_challenges", schema=SCHEMA)
    op.drop_table("otp_challenges", schema=SCHEMA)
    op.drop_table("refresh_tokens", schema=SCHEMA)
    op.drop_column("signing_keys", "active_from", schema=SCHEMA)
    op.drop_index("ix_users_name_lower", table_name="users", schema=SCHEMA)
    for col in ("phone_verified_at", "avatar_media_id", "about"):
        op.drop_column("users", col, schema=SCHEMA)
