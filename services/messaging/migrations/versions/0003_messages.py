"""SMS messages, their status history, conversations by number pair, tenant numbers, opt-outs,
raw provider webhooks and delivery reports waiting for their message (issue 5).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

S = "messaging"

MESSAGE_STATUSES = "('queued', 'sent', 'delivered', 'failed', 'rejected', 'received')"


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(
        name, sa.DateTime(timezone=True), nullable=nullable, server_default=None if nullable else sa.func.now()
    )


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(100), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("response", JSONB),
        _ts("created_at"),
        schema=S,
    )
    op.create_table(
        "sms_numbers",
        sa.Column("number", sa.String(20), primary_key=True),
        sa.Column("tenant_id", sa.Uuid, nullable=False, index=True),
        sa.Column("label", sa.String(100)),
        _ts("created_at"),
        schema=S,
    )
    op.create_table(
        "conversations",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("tenant_id", sa.Uuid, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False, server_default="sms"),
        sa.Column("our_number", sa.String(20), nullable=False),
        sa.Column("peer_number", sa.String(20), nullable=False),
        sa.Column("status", sa.String(12), nullable=False, server_default="open"),
        _ts("last_message_at"),
        _ts("created_at"),
        sa.UniqueConstraint(
            "tenant_id", "channel", "our_number", "peer_number",
            name="uq_conversations_tenant_id_channel_our_number_peer_number",
        ),
        sa.CheckConstraint("status IN ('open', 'closed')", name="status"),
        schema=S,
    )
    op.create_index(
        "ix_conversations_tenant_id_peer_number", "conversations", ["tenant_id", "peer_number"], schema=S
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("tenant_id", sa.Uuid, nullable=False),
        sa.Column("conversation_id", sa.Uuid, sa.ForeignKey(f"{S}.conversations.id"), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False, server_default="sms"),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("from_number", sa.String(20), nullable=False),
        sa.Column("to_number", sa.String(20), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("encoding", sa.String(8), nullable=False),
        sa.Column("segments", sa.SmallInteger, nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("error", sa.String(500)),
        sa.Column("route", sa.String(16), nullable=False, server_default="standard"),
        sa.Column("contact_id", sa.Uuid),
        sa.Column("batch_id", sa.Uuid),
        sa.Column("external_id", sa.String(128)),
        sa.Column("provider", sa.String(32)),
        sa.Column("provider_message_id", sa.String(128)),
        sa.Column("price_minor", sa.BigInteger),
        sa.Column("currency", sa.String(3)),
        sa.Column("billing", sa.String(10), nullable=False, server_default="none"),
        sa.Column("attempts", sa.SmallInteger, nullable=False, server_default="0"),
        _ts("next_attempt_at", nullable=True),
        _ts("lease_until", nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("sent_at", nullable=True),
        _ts("delivered_at", nullable=True),
        sa.CheckConstraint(f"status IN {MESSAGE_STATUSES}", name="status"),
        sa.CheckConstraint("direction IN ('outbound', 'inbound')", name="direction"),
        sa.CheckConstraint("billing IN ('none', 'pending', 'reserved', 'rejected')", name="billing"),
        sa.CheckConstraint("segments BETWEEN 1 AND 10", name="segments"),
        sa.CheckConstraint("char_length(body) <= 1600", name="body_length"),
        schema=S,
    )
    op.create_index("ix_messages_tenant_id_created_at_id", "messages", ["tenant_id", "created_at", "id"], schema=S)
    op.create_index("ix_messages_conversation_id_created_at", "messages", ["conversation_id", "created_at"], schema=S)
    op.create_index("ix_messages_batch_id", "messages", ["batch_id"], schema=S)
    # The dispatcher's queue: only messages waiting to go out carry a next_attempt_at.
    op.create_index(
        "ix_messages_dispatch", "messages", ["route", "next_attempt_at"], schema=S,
        postgresql_where=sa.text("next_attempt_at IS NOT NULL"),
    )
    op.create_index(
        "uq_messages_provider_message_id", "messages", ["provider", "provider_message_id"], unique=True, schema=S,
        postgresql_where=sa.text("provider_message_id IS NOT NULL"),
    )
    op.create_index(
        "uq_messages_tenant_id_external_id", "messages", ["tenant_id", "external_id"], unique=True, schema=S,
        postgresql_where=sa.text("external_id IS NOT NULL"),
    )
    op.create_table(
        "message_status_history",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("message_id", sa.Uuid, sa.ForeignKey(f"{S}.messages.id", ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("detail", sa.String(500)),
        _ts("at"),
        schema=S,
    )
    op.create_index(
        "ix_message_status_history_message_id_id", "message_status_history", ["message_id", "id"], schema=S
    )
    op.create_table(
        "opt_outs",
        sa.Column("tenant_id", sa.Uuid, primary_key=True),
        sa.Column("phone", sa.String(20), primary_key=True),
        sa.Column("keyword", sa.String(16), nullable=False),
        _ts("created_at"),
        schema=S,
    )
    op.create_table(
        "provider_webhooks",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("headers", JSONB, nullable=False),
        _ts("received_at"),
        _ts("processed_at", nullable=True),
        sa.Column("outcome", sa.String(500)),
        schema=S,
    )
    op.create_table(
        "pending_delivery_reports",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("provider_message_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("error", sa.String(500)),
        sa.Column("webhook_id", sa.Uuid),
        _ts("received_at"),
        schema=S,
    )
    op.create_index(
        "ix_pending_delivery_reports_provider_message_id",
        "pending_delivery_reports", ["provider", "provider_message_id"], schema=S,
    )


def downgrade() -> None:
    for table in (
        "pending_delivery_reports", "provider_webhooks", "opt_outs", "message_status_history", "messages",
        "conversations", "sms_numbers", "idempotency_keys",
    ):
        op.drop_table(table, schema=S)
