"""messaging's tables, all in the `messaging` schema."""

import uuid
from datetime import datetime

from common.db import make_base
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

Base = make_base("messaging")


class Contact(Base):
    """A tenant's address book entry (issue 5, seeds 000 and 002). One per phone per tenant."""

    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "phone", name="uq_contacts_tenant_id_phone"),
        # Newest-first listing and the export's keyset walk, both within one tenant.
        Index("ix_contacts_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
        CheckConstraint("char_length(name) BETWEEN 1 AND 100", name="name_length"),
        CheckConstraint("cardinality(tags) <= 20", name="tags_count"),
    )

    # UUIDv7 (time-ordered), made by the service: ties on created_at (one import) keep file order.
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID]
    name: Mapped[str] = mapped_column(String(100))
    phone: Mapped[str] = mapped_column(String(20))  # E.164
    email: Mapped[str | None] = mapped_column(String(254))
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(32)), server_default="{}")
    notes: Mapped[str | None] = mapped_column(String(1000))
    # The CSV import that last created or updated the contact: within one import, a phone it
    # has already written is a repetition in the file, not an update.
    last_import_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class SmsNumber(Base):
    """A phone number a tenant owns at its providers: inbound SMS to it belong to that tenant,
    and the tenant may send from it. One tenant per number."""

    __tablename__ = "sms_numbers"

    number: Mapped[str] = mapped_column(String(20), primary_key=True)  # E.164
    tenant_id: Mapped[uuid.UUID] = mapped_column(index=True)
    label: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SmsNumberClaim(Base):
    """A number a tenant asked to register: a code was sent to it by SMS, and the number becomes
    the tenant's (an SmsNumber) when the code comes back. Several tenants may claim one number;
    the first to prove it wins. The code is kept only as an HMAC."""

    __tablename__ = "sms_number_claims"

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(20), primary_key=True)  # E.164
    label: Mapped[str | None] = mapped_column(String(100))
    code_id: Mapped[uuid.UUID]  # new for every code sent: salts its hash, names its SMS
    code_hash: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Conversation(Base):
    """The messages between one of our numbers (or the platform's default sender) and one peer
    number, within a tenant and a channel."""

    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint(
            "tenant_id", "channel", "our_number", "peer_number",
            name="uq_conversations_tenant_id_channel_our_number_peer_number",
        ),
        Index("ix_conversations_tenant_id_peer_number", "tenant_id", "peer_number"),
        CheckConstraint("status IN ('open', 'closed')", name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID]
    channel: Mapped[str] = mapped_column(String(16), server_default="sms")
    our_number: Mapped[str] = mapped_column(String(20))
    peer_number: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(12), server_default="open")
    last_message_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Message(Base):
    """One SMS, outbound (one per recipient of a send) or inbound.

    `status` is what the user sees: queued -> sent -> delivered | failed, or rejected (no credit,
    opted out); inbound messages are `received`. `billing` tracks the hold: pending (asked),
    reserved (dispatch may go), rejected, none (inbound, OTP). A message waits for the dispatcher
    while `next_attempt_at` is set; `lease_until` marks a dispatcher's claim on it."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
        Index("ix_messages_conversation_id_created_at", "conversation_id", "created_at"),
        Index("ix_messages_batch_id", "batch_id"),
        CheckConstraint(
            "status IN ('queued', 'sent', 'delivered', 'failed', 'rejected', 'received')", name="status"
        ),
        CheckConstraint("direction IN ('outbound', 'inbound')", name="direction"),
        CheckConstraint("billing IN ('none', 'pending', 'reserved', 'rejected')", name="billing"),
        CheckConstraint("segments BETWEEN 1 AND 10", name="segments"),
        CheckConstraint("char_length(body) <= 1600", name="body_length"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID]
    conversation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messaging.conversations.id"))
    channel: Mapped[str] = mapped_column(String(16), server_default="sms")
    direction: Mapped[str] = mapped_column(String(8))
    from_number: Mapped[str] = mapped_column(String(20))
    to_number: Mapped[str] = mapped_column(String(20))
    body: Mapped[str] = mapped_column(Text)
    encoding: Mapped[str] = mapped_column(String(8))
    segments: Mapped[int] = mapped_column(SmallInteger)
    status: Mapped[str] = mapped_column(String(12))
    error: Mapped[str | None] = mapped_column(String(500))
    route: Mapped[str] = mapped_column(String(16), server_default="standard")
    contact_id: Mapped[uuid.UUID | None]
    batch_id: Mapped[uuid.UUID | None]
    external_id: Mapped[str | None] = mapped_column(String(128))  # the caller's id (seed 003 uuid)
    provider: Mapped[str | None] = mapped_column(String(32))
    provider_message_id: Mapped[str | None] = mapped_column(String(128))
    price_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    billing: Mapped[str] = mapped_column(String(10), server_default="none")
    attempts: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Worthless after this (an OTP code): failed as `expired` instead of being sent late.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MessageStatusHistory(Base):
    """Every status a message went through, in order, with what caused it."""

    __tablename__ = "message_status_history"
    __table_args__ = (Index("ix_message_status_history_message_id_id", "message_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messaging.messages.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(12))
    detail: Mapped[str | None] = mapped_column(String(500))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class OptOut(Base):
    """A number that sent STOP (or a synonym) to the tenant; START removes it."""

    __tablename__ = "opt_outs"

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), primary_key=True)
    keyword: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ProviderWebhook(Base):
    """A provider's webhook request exactly as it arrived (stored before it is processed)."""

    __tablename__ = "provider_webhooks"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict] = mapped_column(JSONB)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str | None] = mapped_column(String(500))


class PendingDeliveryReport(Base):
    """A delivery report whose message is not known yet (its provider id is stored after the
    report arrived): kept, and applied when the dispatcher records that id."""

    __tablename__ = "pending_delivery_reports"
    __table_args__ = (
        Index("ix_pending_delivery_reports_provider_message_id", "provider", "provider_message_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    provider_message_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(12))
    error: Mapped[str | None] = mapped_column(String(500))
    webhook_id: Mapped[uuid.UUID | None]
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
