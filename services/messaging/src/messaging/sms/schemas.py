"""The send endpoints on the wire: seed 000's `/sms/send` and seed 003's `/send-sms`."""

from __future__ import annotations

import uuid
from typing import Annotated

from common.api import CamelModel, InputModel
from pydantic import ConfigDict, Field, StringConstraints

# The text goes out as typed: no trimming (it changes what the recipient reads and the segment
# count the caller may have worked out). Blank text is refused by the service.
SmsText = Annotated[str, StringConstraints(strip_whitespace=False)]
# A contact id (UUID) or a phone number; longer strings are neither.
Recipient = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Phone = Annotated[str, StringConstraints(min_length=1, max_length=32)]


class SmsSend(InputModel):
    """`POST /api/v1/sms/send`: one text to many recipients."""

    message: SmsText = Field(description="1-1600 characters, at most 10 SMS segments")
    # The count limit is the service's (settings.sms_max_recipients), with its own error code.
    recipients: list[Recipient] = Field(description="Contact ids of your tenant or E.164 phone numbers")
    sender: Phone | None = Field(None, description="One of your numbers (E.164); default: the platform's number")


class QueuedMessage(CamelModel):
    id: uuid.UUID
    to: str
    status: str = "queued"
    contact_id: uuid.UUID | None = None


class Skipped(CamelModel):
    to: str
    reason: str  # opted_out | duplicate
    contact_id: uuid.UUID | None = None


class SendResult(CamelModel):
    batch_id: uuid.UUID
    sender: str  # the number the messages go out from
    encoding: str
    segments: int  # per message
    messages: list[QueuedMessage]
    skipped: list[Skipped]
    count: int


class SeedSendSms(InputModel):
    """Seed 003's `POST /api/send-sms`."""

    # The seed names the fields in camelCase; accept exactly those.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=False)

    sender_phone: Phone = Field(alias="senderPhone")
    receiver_phone: Phone = Field(alias="receiverPhone")
    message_text: SmsText = Field(alias="messageText")
    # When the caller says it sent the message; kept out of our records (the server's clock
    # stamps messages, so logs and conversations stay in order), accepted for compatibility.
    timestamp: float | None = Field(None, ge=0)
    external_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        None, alias="uuid", description="Your id for the message: a repeat with the same uuid sends nothing again"
    )
