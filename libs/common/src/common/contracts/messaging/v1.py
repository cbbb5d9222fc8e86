"""Events published by the messaging service, version 1 (the SMS send and number-order sagas)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from common.contracts.base import Payload
from common.contracts.registry import event

SmsStatus = Literal["queued", "sent", "delivered", "failed", "rejected", "undelivered"]
OrderStatus = Literal["received", "expired", "cancelled", "failed"]


@event("messaging.sms.requested.v1")
class SmsRequestedV1(Payload):
    """A message was accepted and waits for billing to hold segments x price."""

    message_id: str
    tenant_id: str
    to: str
    country: str = Field(min_length=2, max_length=2)
    segments: int = Field(ge=1, le=10)
    route: str = "standard"


@event("messaging.sms.status.v1")
class SmsStatusV1(Payload):
    message_id: str
    tenant_id: str
    status: SmsStatus
    provider: str | None = None
    error: str | None = None


@event("messaging.webhook.received.v1")
class WebhookReceivedV1(Payload):
    """A provider webhook was verified and stored raw (`provider_webhooks`); the worker parses
    and applies it (delivery reports, inbound messages). Internal to messaging."""

    webhook_id: str
    provider: str


@event("messaging.message.received.v1")
class MessageReceivedV1(Payload):
    """An inbound message was stored in a conversation (for the inbox and the chat gateway)."""

    message_id: str
    tenant_id: str
    conversation_id: str
    channel: str
    from_number: str
    to_number: str


@event("messaging.order.created.v1")
class OrderCreatedV1(Payload):
    order_id: str
    tenant_id: str
    provider: str
    service: str
    country: str = Field(min_length=2, max_length=2)


@event("messaging.order.updated.v1")
class OrderUpdatedV1(Payload):
    order_id: str
    tenant_id: str
    status: OrderStatus
