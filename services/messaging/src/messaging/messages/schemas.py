"""Messages on the wire (seed 002 `/messages`, seed 000 `/sms/logs`, seed 003 conversations)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from common.api import CamelModel, InputModel
from pydantic import BaseModel, Field


class MessageRead(CamelModel):
    id: uuid.UUID
    conversation_id: uuid.UUID
    channel: str
    direction: str  # outbound | inbound
    from_: str = Field(alias="from")
    to: str
    body: str
    encoding: str
    segments: int
    status: str  # queued | sent | delivered | failed | rejected | received
    error: str | None
    contact_id: uuid.UUID | None
    batch_id: uuid.UUID | None
    external_id: str | None
    provider: str | None
    price_minor: int | None
    currency: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None


class StatusChange(CamelModel):
    status: str
    at: datetime
    detail: str | None


class MessageDetail(MessageRead):
    history: list[StatusChange]


class MessageCreate(InputModel):
    """Seed 002's `POST /messages`. Only `type: "text"` is sent today (media and WhatsApp come
    later), so `content` is checked by the service, per type."""

    to: str = Field(min_length=1, max_length=64)
    type: str = Field(min_length=1, max_length=32)
    content: dict[str, Any]


class ConversationMessage(BaseModel):
    """Seed 003's shape, snake_case as the seed writes it (plus the id and status)."""

    id: uuid.UUID
    phone_number: str  # who sent it: our number for "sent", theirs for "received"
    message_text: str
    timestamp: int  # unix seconds
    direction: str  # sent | received
    status: str


class MessageQueued(CamelModel):
    """The answer to seed 002's `POST /messages`: the message as it was queued."""

    id: uuid.UUID
    to: str
    from_: str = Field(alias="from")
    type: str = "text"
    content: dict[str, Any]
    status: str
    encoding: str
    segments: int
    contact_id: uuid.UUID | None
    batch_id: uuid.UUID
