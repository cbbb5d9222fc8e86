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


@event("auth.password_reset.requested.v2")
class PasswordResetRequestedV2(Payload):
    """A single-use set-your-password link for `email`: a reset the user asked for, or an
    invitation to a tenant (`purpose`). The link's token is sealed (`common.sealed`, the same
    keys as OTP codes: whoever delivers the email holds them): with it, anyone who reads the
    topic or the outbox could set the account's password. v1 carried it plainly (still in the
    registry for events written before; no longer produced). Consumers must never log it."""

    user_id: str
    email: str
    sealed_token: str
    purpose: Literal["password_reset", "invitation"]
    expires_at: str
