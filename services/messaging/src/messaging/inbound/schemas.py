"""Received messages on the wire (seed 003 `/api/receive-sms`) and the webhook's answer."""

from __future__ import annotations

import uuid
from typing import Annotated

from common.api import CamelModel, InputModel
from pydantic import Field, StringConstraints, field_validator

RawPhone = Annotated[str, StringConstraints(min_length=1, max_length=32)]
# The text as sent: not trimmed (InputModel trims strings), spaces may be the message.
Text = Annotated[str, StringConstraints(strip_whitespace=False, min_length=1)]
MAX_TIMESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z


class ReceiveSmsCreate(InputModel):
    """Seed 003: an SMS the caller's tenant received. Phones are written with their country code
    (`+14155552671`; `14155552671` is read the same); the service normalises them to E.164."""

    sender_phone: RawPhone
    receiver_phone: RawPhone
    message_text: Text
    timestamp: int | None = Field(default=None, ge=0, le=MAX_TIMESTAMP, description="Unix seconds, when it was sent")
    uuid: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        default=None, description="The caller's id of the message: a repeat answers the same and stores nothing"
    )

    @field_validator("message_text")
    @classmethod
    def _readable(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the message text is empty")
        if "\x00" in value:
            raise ValueError("the message text may not contain NUL characters")
        return value


class ReceivedSms(CamelModel):
    message: str = "SMS received successfully"
    id: uuid.UUID


class WebhookAccepted(CamelModel):
    received: bool = True
    webhook_id: uuid.UUID
