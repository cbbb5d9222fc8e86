"""Events published by the auth service, version 2 (only the ones that changed)."""

from __future__ import annotations

from typing import Literal

from common.contracts.base import Payload
from common.contracts.registry import event


@event("auth.otp.requested.v2")
class OtpRequestedV2(Payload):
    """The code, sealed (`common.sealed`) under the key auth and messaging share: the outbox row
    and the Kafka record never hold it in the clear (v1 carried it plainly; it is still
    consumed, no longer produced). Consumers must never log the opened code."""

    challenge_id: str
    phone: str
    sealed_code: str
    purpose: Literal["login", "verify_phone"]
    expires_at: str
